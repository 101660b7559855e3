//! Streams an archive written on a blocking thread as gRPC chunks (`DownloadSnapshot`,
//! `ExportBundle`): full chunks go through a bounded channel, so a slow client paces the writer
//! and nothing buffers the whole archive; the last message carries the SHA-256 of every byte.

use std::pin::Pin;

use emberdb_proto::v1 as pb;
use tonic::Status;

/// Bytes per streamed chunk.
const CHUNK: usize = 1 << 20;

/// A chunk message of an archive stream.
pub trait Chunk: Send + 'static {
    fn data(data: Vec<u8>) -> Self;
    /// The last message: the hex SHA-256 of the whole archive.
    fn last(sha256: String) -> Self;
}

impl Chunk for pb::SnapshotChunk {
    fn data(data: Vec<u8>) -> Self {
        pb::SnapshotChunk {
            data,
            archive_sha256: String::new(),
        }
    }
    fn last(archive_sha256: String) -> Self {
        pb::SnapshotChunk {
            data: Vec::new(),
            archive_sha256,
        }
    }
}

impl Chunk for pb::BundleChunk {
    fn data(data: Vec<u8>) -> Self {
        pb::BundleChunk {
            data,
            archive_sha256: String::new(),
        }
    }
    fn last(archive_sha256: String) -> Self {
        pb::BundleChunk {
            data: Vec::new(),
            archive_sha256,
        }
    }
}

pub type ChunkStream<C> = Pin<Box<dyn tokio_stream::Stream<Item = Result<C, Status>> + Send>>;

/// A `Write` that hands full chunks to the stream (blocking while the client is behind) and
/// hashes everything.
pub struct ChunkWriter<C: Chunk> {
    tx: tokio::sync::mpsc::Sender<Result<C, Status>>,
    buf: Vec<u8>,
    hash: sha2::Sha256,
}

impl<C: Chunk> ChunkWriter<C> {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(C::data(data)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl<C: Chunk> std::io::Write for ChunkWriter<C> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.hash.update(b);
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `write` on a blocking thread and streams what it writes; an error it returns ends the
/// stream with that status instead of the digest.
pub fn stream_archive<C: Chunk>(
    write: impl FnOnce(&mut ChunkWriter<C>) -> Result<(), Status> + Send + 'static,
) -> ChunkStream<C> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            hash: sha2::Sha256::new(),
        };
        let written = write(&mut w).and_then(|()| {
            w.flush_chunk()
                .map_err(|e| Status::unavailable(e.to_string()))
        });
        let last = written.map(|()| {
            C::last(
                w.hash
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            )
        });
        let _ = tx.blocking_send(last);
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
