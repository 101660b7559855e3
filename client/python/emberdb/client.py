"""`Client` (blocking) and `AsyncClient` (grpc.aio): one method per RPC, numpy in, typed results out.

Both share `_Api`, which validates arguments and builds requests; the two subclasses only differ
in how a call is carried out (`_unary`, and the streaming/pipelined bulk calls). Arguments after
the names are the request message's own fields; `None` means "the server's default".
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc
import grpc.aio
import numpy as np

from . import _wire
from ._proto import pb
from .errors import EmberError, from_rpc_error
from .types import (
    ActionItem,
    ActionList,
    BatchHits,
    CanaryReport,
    CollectionInfo,
    ConfusionReport,
    ConsistencyReport,
    DriftReport,
    Hits,
    MarginReport,
    MonitorStatus,
    Points,
    Projection,
    RecallReport,
    SnapshotInfo,
    BundleInfo,
    VersionInfo,
    enum_number,
    from_proto,
    parse_window,
    window_proto,
)

#: Largest encoded UpsertRequest / SearchBatchRequest the client sends (the server's default limit
#: is 64 MiB); batches are cut smaller when rows are wide.
MAX_REQUEST_BYTES = 16 << 20
MAX_BATCH = 10_000

# (service, rpc) -> response message name.
_RESPONSES = {
    ("Collections", "CreateVersion"): "CreateVersionResponse",
    ("Collections", "ListCollections"): "ListCollectionsResponse",
    ("Collections", "DescribeVersion"): "DescribeVersionResponse",
    ("Collections", "DropVersion"): "DropVersionResponse",
    ("Collections", "DropCollection"): "DropCollectionResponse",
    ("Collections", "SetAlias"): "SetAliasResponse",
    ("Collections", "DeleteAlias"): "DeleteAliasResponse",
    ("Points", "Upsert"): "UpsertResponse",
    ("Points", "UpsertStream"): "UpsertResponse",
    ("Points", "Delete"): "DeleteResponse",
    ("Points", "Get"): "GetResponse",
    ("Points", "Search"): "SearchResponse",
    ("Points", "SearchBatch"): "SearchBatchResponse",
    ("Evaluation", "Recall"): "RecallReport",
    ("Evaluation", "Margin"): "MarginReport",
    ("Evaluation", "Confusion"): "ConfusionReport",
    ("Evaluation", "Actions"): "ActionsReport",
    ("Evaluation", "Project"): "ProjectReport",
    ("Operations", "Drift"): "DriftReport",
    ("Operations", "CompareVersions"): "CompareVersionsReport",
    ("Operations", "CheckConsistency"): "ConsistencyReport",
    ("Operations", "SetMonitor"): "SetMonitorResponse",
    ("Operations", "ListMonitors"): "ListMonitorsResponse",
    ("Operations", "DeleteMonitor"): "DeleteMonitorResponse",
    ("Snapshots", "CreateSnapshot"): "CreateSnapshotResponse",
    ("Snapshots", "ListSnapshots"): "ListSnapshotsResponse",
    ("Snapshots", "DeleteSnapshot"): "DeleteSnapshotResponse",
    ("Snapshots", "DownloadSnapshot"): "SnapshotChunk",
    ("Operations", "ExportBundle"): "BundleChunk",
    ("Operations", "ListBundles"): "ListBundlesResponse",
    ("Operations", "DownloadBundle"): "BundleChunk",
}


def _serialize(m: Any) -> bytes:
    return m if isinstance(m, (bytes, bytearray)) else m.SerializeToString()


def _read_pem(x: Any, name: str) -> Optional[bytes]:
    if x is None:
        return None
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, (str, os.PathLike)):
        with open(x, "rb") as f:
            return f.read()
    raise ValueError(f"{name} must be PEM bytes or a path to a PEM file")


def _channel_args(address: str, tls_ca, tls_cert, tls_key) -> Tuple[str, Optional[grpc.ChannelCredentials]]:
    if not isinstance(address, str) or not address:
        raise ValueError("address must be 'host:port', 'http://host:port' or 'https://host:port'")
    secure = tls_ca is not None or tls_cert is not None
    target = address
    if address.startswith("https://"):
        secure, target = True, address[len("https://") :]
    elif address.startswith("http://"):
        if secure:
            raise ValueError("an http:// address cannot use tls_ca / tls_cert; use https://")
        target = address[len("http://") :]
    target = target.rstrip("/")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    creds = None
    if secure:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read_pem(tls_ca, "tls_ca"),
            private_key=_read_pem(tls_key, "tls_key"),
            certificate_chain=_read_pem(tls_cert, "tls_cert"),
        )
    return target, creds


_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_COMMITTED = re.compile(r"after (\d+) points committed")


def _opt_u32(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be an int in 0..2**32-1, got {value!r}")
    return int(value)


def _opt_u64(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 1 << 64:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _opt_f64(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _set(msg, **fields) -> Any:
    """Sets the fields that are not None (None = the server's default)."""
    for k, v in fields.items():
        if v is not None:
            setattr(msg, k, v)
    return msg


_I64 = np.dtype("<i8")


def _hits(data: bytes) -> Hits:
    """Hits from a SearchResponse's bytes. The client asks for `columns`, which are read straight
    into arrays; anything else (a server that sends `neighbors`) is parsed by protobuf."""
    cols = _wire.search_columns(data)
    if cols is not None:
        ids, dist, labels = cols
        # bytearray: the arrays own writable memory, like every other array the client returns.
        return Hits(ids=np.frombuffer(bytearray(ids), dtype=_I64), distances=np.frombuffer(bytearray(dist), dtype=_wire._F32), labels=labels)
    resp = pb.SearchResponse.FromString(data)
    if resp.HasField("columns"):
        c = resp.columns
        return Hits(ids=np.array(c.ids, dtype=np.uint64).astype(_I64), distances=np.array(c.distances, dtype=np.float32), labels=list(c.labels))
    ids, dists, labels = [], [], []
    for x in resp.neighbors:
        ids.append(x.id)
        dists.append(x.distance)
        labels.append(x.label)
    return Hits(ids=np.array(ids, dtype=_I64), distances=np.array(dists, dtype=np.float32), labels=labels)


def _batch_hits(responses: Sequence[Any], n: int, k: int) -> BatchHits:
    ids = np.full((n, k), -1, dtype=np.int64)
    dist = np.full((n, k), np.inf, dtype=np.float32)
    counts = np.zeros(n, dtype=np.int64)
    labels: List[List[str]] = []
    row = 0
    for resp in responses:
        for res in resp.results:
            nb = res.neighbors
            m = len(nb)
            if m:
                ids[row, :m] = [x.id for x in nb]
                dist[row, :m] = [x.distance for x in nb]
            counts[row] = m
            labels.append([x.label for x in nb])
            row += 1
    if row != n:
        raise EmberError("INTERNAL", f"the server answered {row} of {n} queries")
    return BatchHits(ids=ids, distances=dist, labels=labels, counts=counts)


def _points(resp, with_vectors: bool) -> Points:
    ps = resp.points
    n = len(ps)
    vectors = None
    if with_vectors:
        vectors = np.array([np.asarray(p.vector, dtype=np.float32) for p in ps], dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    return Points(
        ids=np.fromiter((p.id for p in ps), dtype=np.int64, count=n),
        labels=[p.label for p in ps],
        metadata=[dict(p.metadata) for p in ps],
        timestamps_ms=np.fromiter((p.timestamp_ms for p in ps), dtype=np.int64, count=n),
        vectors=vectors,
        raw=resp,
    )


def _projection(resp) -> Projection:
    ps = resp.points
    n = len(ps)
    xy = np.empty((n, 2), dtype=np.float64)
    xy[:, 0] = np.fromiter((p.x for p in ps), dtype=np.float64, count=n)
    xy[:, 1] = np.fromiter((p.y for p in ps), dtype=np.float64, count=n)
    return Projection(
        method=resp.method,
        ids=np.fromiter((p.id for p in ps), dtype=np.int64, count=n),
        labels=[p.label for p in ps],
        xy=xy,
        raw=resp,
    )


def _actions(resp) -> ActionList:
    return ActionList([from_proto(ActionItem, i) for i in resp.items], mode=resp.mode, raw=resp)


class _Api:
    """Request building shared by Client and AsyncClient."""

    def __init__(self, address, api_key, tls_ca, timeout, tls_cert, tls_key, options):
        target, creds = _channel_args(address, tls_ca, tls_cert, tls_key)
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be a non-empty str")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError("timeout must be a positive number of seconds")
        self.address = address
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        opts = list({**dict(_OPTIONS), **dict(options or [])}.items())  # the caller's options win
        self._channel = self._open(target, creds, opts)
        self._calls: Dict[Tuple[str, str], Any] = {}
        self._heads: Dict[Tuple[str, str], bytes] = {}

    def _call(self, service: str, rpc: str):
        c = self._calls.get((service, rpc))
        if c is None:
            resp = pb.messages[_RESPONSES[(service, rpc)]]
            path = f"/emberdb.v1.{service}/{rpc}"
            if rpc == "Search":  # read by _hits straight from the bytes
                c = self._channel.unary_unary(path, request_serializer=_serialize)
            elif rpc in ("DownloadSnapshot", "ExportBundle", "DownloadBundle"):
                c = self._channel.unary_stream(path, request_serializer=_serialize, response_deserializer=resp.FromString)
            elif rpc == "UpsertStream":
                c = self._channel.stream_unary(path, request_serializer=_serialize, response_deserializer=resp.FromString)
            else:
                c = self._channel.unary_unary(path, request_serializer=_serialize, response_deserializer=resp.FromString)
            self._calls[(service, rpc)] = c
        return c

    def _head(self, collection: str, version: str) -> bytes:
        key = (collection, version)
        h = self._heads.get(key)
        if h is None:
            h = _wire.header(collection, version)
            if len(self._heads) > 1024:
                self._heads.clear()
            self._heads[key] = h
        return h

    # ------------------------------------------------------------------ collections

    def create_version(self, collection: str, version: str, dim: int, metric: str = "l2", m: int = 0, ef_construction: int = 0):
        """Creates a version (and its collection when new). metric: "l2", "cosine" or "dot";
        m / ef_construction 0 mean the server's defaults (16 / 200)."""
        req = pb.CreateVersionRequest(
            collection=collection,
            version=version,
            dimension=_wire._uint32(dim, "dim"),
            metric=enum_number("Metric", metric, "metric"),
            hnsw=pb.HnswParams(m=_wire._uint32(m, "m"), ef_construction=_wire._uint32(ef_construction, "ef_construction")),
        )
        return self._unary("Collections", "CreateVersion", req, lambda r: from_proto(VersionInfo, r.version))

    def describe(self, collection: str, version: str):
        """The version (resolved through an alias when one is named)."""
        req = pb.DescribeVersionRequest(collection=collection, version=version)
        return self._unary("Collections", "DescribeVersion", req, lambda r: from_proto(VersionInfo, r.version))

    def list_collections(self):
        """Every collection (sorted by name) with its versions and aliases."""
        return self._unary(
            "Collections", "ListCollections", pb.ListCollectionsRequest(), lambda r: [CollectionInfo._from(c) for c in r.collections]
        )

    def drop_version(self, collection: str, version: str):
        req = pb.DropVersionRequest(collection=collection, version=version)
        return self._unary("Collections", "DropVersion", req, lambda r: None)

    def drop_collection(self, collection: str):
        req = pb.DropCollectionRequest(collection=collection)
        return self._unary("Collections", "DropCollection", req, lambda r: None)

    def set_alias(self, collection: str, alias: str, version: str):
        """Points `alias` at `version` atomically; returns the version it pointed to before, or None."""
        req = pb.SetAliasRequest(collection=collection, alias=alias, version=version)
        return self._unary("Collections", "SetAlias", req, lambda r: r.previous_version or None)

    def delete_alias(self, collection: str, alias: str):
        req = pb.DeleteAliasRequest(collection=collection, alias=alias)
        return self._unary("Collections", "DeleteAlias", req, lambda r: None)

    # ------------------------------------------------------------------ points

    def delete(self, collection: str, version: str, ids):
        """Deletes points by id; returns how many existed."""
        ids = _wire.as_ids(ids)
        req = pb.DeleteRequest(collection=collection, version=version, ids=ids.tolist())
        return self._unary("Points", "Delete", req, lambda r: int(r.deleted))

    def get(self, collection: str, version: str, ids, with_vectors: bool = False):
        """Points by id, in request order; ids that do not exist are left out."""
        ids = _wire.as_ids(ids)
        req = pb.GetRequest(collection=collection, version=version, ids=ids.tolist(), with_vectors=bool(with_vectors))
        return self._unary("Points", "Get", req, lambda r: _points(r, bool(with_vectors)))

    def search(self, collection: str, version: str, vector, k: int = 10, ef: int = 0, exact: bool = False, labels=None, metadata=None):
        """The k nearest neighbours of one vector: Hits with ids (int64), distances (float32) and
        labels, nearest first. labels / metadata filter the candidates (any of the labels, every
        metadata pair)."""
        v = _wire.vector_bytes(vector)
        tail = _wire.search_tail(k, ef, exact, _wire.filter_bytes(labels, metadata), columns=True)
        body = _wire.search_request(self._head(collection, version), v, tail)
        return self._unary("Points", "Search", body, _hits)

    def _search_batch_requests(self, collection, version, vectors, k, ef, exact, labels, metadata, batch_size, dim) -> Tuple[int, Any]:
        """Validates up front, then returns the number of queries and a generator of encoded
        SearchBatch requests (each encoded only when the previous ones are in flight)."""
        q = _wire.as_matrix(vectors, "vectors", dim)
        _wire._uint32(k, "k")
        batch_size = _batch_size(batch_size, q.shape[1])
        head, tail = self._head(collection, version), _wire.search_tail(k, ef, exact, _wire.filter_bytes(labels, metadata))
        n = q.shape[0]
        return n, (_wire.search_batch_request(head, q[i : i + batch_size], tail) for i in range(0, n, batch_size))

    def _upsert_batches(self, collection, version, ids, vectors, labels, metadata, timestamps_ms, batch_size, dim):
        """Validates everything up front, then returns n and a generator of encoded UpsertRequests."""
        v = _wire.as_matrix(vectors, "vectors", dim)
        n = v.shape[0]
        ids = _wire.as_ids(ids, "ids", n)
        labels = _wire.as_labels(labels, n)
        metadata = _wire.as_metadata(metadata, n)
        ts = _wire.as_timestamps(timestamps_ms, n)
        batch_size = _batch_size(batch_size, v.shape[1])
        head = self._head(collection, version)

        def gen():
            for i in range(0, n, batch_size):
                j = min(n, i + batch_size)
                yield _wire.upsert_request(
                    head,
                    ids[i:j],
                    v[i:j],
                    labels[i:j] if labels is not None else None,
                    metadata[i:j] if metadata is not None else None,
                    ts[i:j] if ts is not None else None,
                ), j - i

        return n, gen

    # ------------------------------------------------------------------ evaluation

    def recall(self, collection: str, version: str, k=None, ef=None, sample_size=None, seed=None):
        """ANN recall@k against exact search, plus label retrieval quality."""
        req = _set(
            pb.RecallRequest(collection=collection, version=version),
            k=_opt_u32(k, "k"),
            ef=_opt_u32(ef, "ef"),
            sample_size=_opt_u32(sample_size, "sample_size"),
            seed=_opt_u64(seed, "seed"),
        )
        return self._unary("Evaluation", "Recall", req, lambda r: from_proto(RecallReport, r))

    def margin(self, collection: str, version: str, threshold=None, lowest_n=None, mode: str = "auto"):
        """Leave-one-out 1-NN margins; mode "auto", "exact" or "approximate"."""
        req = _set(
            pb.MarginRequest(collection=collection, version=version, mode=_mode(mode)),
            threshold=_opt_f64(threshold, "threshold"),
            lowest_n=_opt_u32(lowest_n, "lowest_n"),
        )
        return self._unary("Evaluation", "Margin", req, lambda r: from_proto(MarginReport, r))

    def confusion(self, collection: str, version: str, top_pairs=None, mode: str = "auto"):
        """Leave-one-out 1-NN confusion between classes."""
        req = _set(pb.ConfusionRequest(collection=collection, version=version, mode=_mode(mode)), top_pairs=_opt_u32(top_pairs, "top_pairs"))
        return self._unary("Evaluation", "Confusion", req, lambda r: from_proto(ConfusionReport, r))

    def actions(self, collection: str, version: str, format: str = "structured", mode: str = "auto"):
        """Signals turned into owned work items, highest severity first; format "markdown" also
        renders each as a ticket (ActionItem.markdown)."""
        req = pb.ActionsRequest(collection=collection, version=version, format=enum_number("ActionFormat", format, "format"), mode=_mode(mode))
        return self._unary("Evaluation", "Actions", req, _actions)

    def project(self, collection: str, version: str, method: str = "pca", sample_size=None, seed=None):
        """2-D coordinates for plotting (at most 20,000 points)."""
        req = _set(
            pb.ProjectRequest(collection=collection, version=version, method=enum_number("ProjectionMethod", method, "method")),
            sample_size=_opt_u32(sample_size, "sample_size"),
            seed=_opt_u64(seed, "seed"),
        )
        return self._unary("Evaluation", "Project", req, _projection)

    # ------------------------------------------------------------------ operations

    def drift(self, collection: str, baseline, current, threshold=None, calibrate: bool = False, sample_size=None, seed=None):
        """Distribution shift between two windows, each "VERSION[@FROM_MS..TO_MS]" (or a Window)."""
        req = _set(
            pb.DriftRequest(
                collection=collection,
                baseline=window_proto(parse_window(baseline, "baseline")),
                current=window_proto(parse_window(current, "current")),
                calibrate=bool(calibrate),
            ),
            threshold=_opt_f64(threshold, "threshold"),
            sample_size=_opt_u32(sample_size, "sample_size"),
            seed=_opt_u64(seed, "seed"),
        )
        return self._unary("Operations", "Drift", req, lambda r: from_proto(DriftReport, r))

    @staticmethod
    def _bundle_request(collection, current, baseline, k, include_points, max_points, threshold, calibrate, sample_size, seed):
        return _set(
            pb.ExportBundleRequest(
                collection=collection,
                current=window_proto(parse_window(current, "current")),
                baseline=window_proto(parse_window(baseline, "baseline")),
                include_points=bool(include_points),
                calibrate=bool(calibrate),
            ),
            k=_opt_u32(k, "k"),
            max_points=_opt_u32(max_points, "max_points"),
            threshold=_opt_f64(threshold, "threshold"),
            sample_size=_opt_u32(sample_size, "sample_size"),
            seed=_opt_u64(seed, "seed"),
        )

    def compare_versions(self, collection: str, baseline_version: str, candidate_version: str, k=None, sample_size=None, seed=None, promote_alias=None):
        """Canary comparison over the shared ids with a PROMOTE / HOLD / ROLLBACK verdict; on
        PROMOTE, `promote_alias` moves to the candidate in the same call."""
        req = _set(
            pb.CompareVersionsRequest(
                collection=collection,
                baseline_version=baseline_version,
                candidate_version=candidate_version,
                promote_alias=promote_alias or "",
            ),
            k=_opt_u32(k, "k"),
            sample_size=_opt_u32(sample_size, "sample_size"),
            seed=_opt_u64(seed, "seed"),
        )
        return self._unary("Operations", "CompareVersions", req, lambda r: from_proto(CanaryReport, r))

    def check_consistency(self, collection: str, version: str, repair: bool = False):
        """Does the graph agree with RocksDB? With repair, rebuild when it does not."""
        req = pb.CheckConsistencyRequest(collection=collection, version=version, repair=bool(repair))
        return self._unary("Operations", "CheckConsistency", req, lambda r: from_proto(ConsistencyReport, r))

    def set_monitor(self, collection: str, version: str, interval_s: int = 60, k=None, sample_size=None, baseline=None, record_bundles: bool = False):
        """Schedules recall / label / drift / consistency SLIs for a version every interval_s
        seconds; returns True when it replaced a monitor of the same version. With
        `record_bundles` (needs a baseline) the server writes an incident bundle under
        <data-dir>/bundles/ when the drift score crosses its threshold."""
        spec = pb.MonitorSpec(
            collection=collection,
            version=version,
            interval_s=_wire._uint32(interval_s, "interval_s"),
            k=_opt_u32(k, "k") or 0,
            sample_size=_opt_u32(sample_size, "sample_size") or 0,
            record_bundles=bool(record_bundles),
        )
        if baseline is not None:
            spec.baseline.CopyFrom(window_proto(parse_window(baseline, "baseline")))
        return self._unary("Operations", "SetMonitor", pb.SetMonitorRequest(spec=spec), lambda r: bool(r.replaced))

    def list_monitors(self, collection: str = ""):
        req = pb.ListMonitorsRequest(collection=collection)
        return self._unary("Operations", "ListMonitors", req, lambda r: [from_proto(MonitorStatus, m) for m in r.monitors])

    def delete_monitor(self, collection: str, version: str):
        req = pb.DeleteMonitorRequest(collection=collection, version=version)
        return self._unary("Operations", "DeleteMonitor", req, lambda r: None)

    # ------------------------------------------------------------------ snapshots (admin)

    def create_snapshot(self, name: Optional[str] = None, collection: Optional[str] = None):
        """A point-in-time snapshot, taken while writes go on, of one collection or (None) of the
        whole server; name None lets the server choose. Returns SnapshotInfo (versions with the
        op sequence each holds)."""
        req = pb.CreateSnapshotRequest(name=name or "", collection=collection or "")
        return self._unary("Snapshots", "CreateSnapshot", req, lambda r: from_proto(SnapshotInfo, r.snapshot))

    def list_bundles(self, collection: str = ""):
        """Incident bundles monitors recorded (record_bundles), oldest first: of one collection,
        or of every collection the key may read."""
        req = pb.ListBundlesRequest(collection=collection)
        return self._unary("Operations", "ListBundles", req, lambda r: [from_proto(BundleInfo, b) for b in r.bundles])

    def list_snapshots(self):
        return self._unary("Snapshots", "ListSnapshots", pb.ListSnapshotsRequest(), lambda r: [from_proto(SnapshotInfo, s) for s in r.snapshots])

    def delete_snapshot(self, name: str):
        return self._unary("Snapshots", "DeleteSnapshot", pb.DeleteSnapshotRequest(name=name), lambda r: None)


def _mode(mode: str) -> int:
    return enum_number("EvalMode", mode, "mode")


def _batch_size(batch_size: Any, dim: int) -> int:
    b = _wire._uint32(batch_size, "batch_size")
    if not 1 <= b <= MAX_BATCH:
        raise ValueError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
    return max(1, min(b, MAX_REQUEST_BYTES // (4 * dim + 64)))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="pt", desc="upsert")


def _stream_error(e: Exception) -> EmberError:
    """The mapped error of a failed UpsertStream, with `committed` parsed from the server's message."""
    err = from_rpc_error(e)
    m = _COMMITTED.search(err.message)
    err.committed = int(m.group(1)) if m else None
    return err


class Client(_Api):
    """A blocking client. Also a context manager (closes the channel).

    >>> c = emberdb.Client("127.0.0.1:50051")
    >>> c.create_version("images", "resnet-v1", dim=512)
    """

    def __init__(self, address: str = "127.0.0.1:50051", api_key: Optional[str] = None, tls_ca=None, timeout: Optional[float] = None, *, tls_cert=None, tls_key=None, options=None):
        super().__init__(address, api_key, tls_ca, timeout, tls_cert, tls_key, options)

    @staticmethod
    def _open(target, creds, opts):
        return grpc.secure_channel(target, creds, options=opts) if creds else grpc.insecure_channel(target, options=opts)

    def _unary(self, service: str, rpc: str, request, parse):
        try:
            resp = self._call(service, rpc)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return parse(resp)

    def upsert(self, collection: str, version: str, ids, vectors, labels=None, metadata=None, timestamps_ms=None, batch_size: int = 1000, progress: bool = False) -> int:
        """Inserts or replaces points, streamed in durable batches of `batch_size` (UpsertStream).
        vectors: (n, dim) array-like of any float dtype. Shape and dtype mistakes raise ValueError
        before any point is sent (the version's dimension is read first). On a server error the
        raised EmberError has `committed`: the points durably written before the failing batch.
        Returns the number of points upserted."""
        dim = self.describe(collection, version).dimension
        n, gen = self._upsert_batches(collection, version, ids, vectors, labels, metadata, timestamps_ms, batch_size, dim)
        bar = _progress(n, progress)

        def requests():
            for body, count in gen():
                yield body
                if bar is not None:
                    bar.update(count)

        try:
            resp = self._call("Points", "UpsertStream")(requests(), timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _stream_error(e) from None
        finally:
            if bar is not None:
                bar.close()
        return int(resp.upserted)

    def search_batch(self, collection: str, version: str, vectors, k: int = 10, ef: int = 0, exact: bool = False, labels=None, metadata=None, batch_size: int = 1000, concurrency: int = 2):
        """The k nearest neighbours of each row of `vectors` (n, dim): BatchHits with ids (n, k)
        int64 and distances (n, k) float32. Sent as SearchBatch calls of `batch_size` queries,
        `concurrency` of them in flight, so encoding and decoding overlap the server's work."""
        dim = self.describe(collection, version).dimension
        n, reqs = self._search_batch_requests(collection, version, vectors, k, ef, exact, labels, metadata, batch_size, dim)
        call = self._call("Points", "SearchBatch")
        concurrency = max(1, int(concurrency))
        responses = []
        pending = []
        try:
            for body in reqs:
                pending.append(call.future(body, timeout=self.timeout, metadata=self._metadata))
                if len(pending) >= concurrency:
                    responses.append(pending.pop(0).result())
            responses.extend(f.result() for f in pending)
        except grpc.RpcError as e:
            for f in pending:
                f.cancel()
            raise from_rpc_error(e) from None
        return _batch_hits(responses, n, int(k))

    def close(self) -> None:
        self._channel.close()

    def download_snapshot(self, name: str, out) -> int:
        """Downloads a snapshot as one tar archive to the path `out`, checked against the server's
        SHA-256; returns the bytes written. `emberdb restore --from out --data-dir DIR` restores
        it. On any failure the partial file is removed."""
        return self._save_archive("Snapshots", "DownloadSnapshot", pb.DownloadSnapshotRequest(name=name), out)

    def _save_archive(self, service: str, rpc: str, req, out) -> int:
        sink = _ArchiveSink(out)
        try:
            for chunk in self._call(service, rpc)(req, timeout=self.timeout, metadata=self._metadata):
                if sink.take(chunk):
                    return sink.written
            sink.fail("the download ended before the archive's checksum")
        except grpc.RpcError as e:
            sink.discard()
            raise from_rpc_error(e) from None
        except BaseException:
            sink.discard()
            raise

    def export_bundle(self, collection: str, current, baseline, out, k=None, include_points: bool = True, max_points=None, threshold=None, calibrate: bool = False, sample_size=None, seed=None) -> int:
        """Writes an incident bundle (.tar.gz) of two windows ("VERSION[@FROM_MS..TO_MS]" or
        Window) to the path `out`, checked against the server's SHA-256; returns the bytes written.
        `ember bundle replay out` reproduces its figures. On any failure the partial file is removed."""
        req = self._bundle_request(collection, current, baseline, k, include_points, max_points, threshold, calibrate, sample_size, seed)
        return self._save_archive("Operations", "ExportBundle", req, out)

    def download_bundle(self, name: str, out) -> int:
        """Downloads a recorded bundle (see list_bundles) to the path `out`, checked against the
        server's SHA-256; returns the bytes written."""
        return self._save_archive("Operations", "DownloadBundle", pb.DownloadBundleRequest(name=name), out)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ArchiveSink:
    """Writes a downloaded archive (snapshot or bundle) to `out`, hashing as it goes; `take` returns True at
    the final chunk once the SHA-256 matched. `discard` removes the partial file."""

    def __init__(self, out):
        import hashlib

        self.path = os.fspath(out)
        self.file = open(self.path, "wb")
        self.hash = hashlib.sha256()
        self.written = 0

    def take(self, chunk) -> bool:
        if chunk.archive_sha256:
            got = self.hash.hexdigest()
            if got != chunk.archive_sha256:
                self.fail(f"archive SHA-256 {got}, the server sent {chunk.archive_sha256}")
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            return True
        self.hash.update(chunk.data)
        self.file.write(chunk.data)
        self.written += len(chunk.data)
        return False

    def fail(self, why: str):
        self.discard()
        raise EmberError("DATA_LOSS", why)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.path):
            os.remove(self.path)


class AsyncClient(_Api):
    """The same methods as `Client`, as coroutines (grpc.aio). Use inside a running event loop;
    `async with emberdb.AsyncClient(...) as c:` closes the channel."""

    def __init__(self, address: str = "127.0.0.1:50051", api_key: Optional[str] = None, tls_ca=None, timeout: Optional[float] = None, *, tls_cert=None, tls_key=None, options=None):
        super().__init__(address, api_key, tls_ca, timeout, tls_cert, tls_key, options)

    @staticmethod
    def _open(target, creds, opts):
        return grpc.aio.secure_channel(target, creds, options=opts) if creds else grpc.aio.insecure_channel(target, options=opts)

    def _unary(self, service: str, rpc: str, request, parse):
        call = self._call(service, rpc)

        async def run():
            try:
                resp = await call(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as e:
                raise from_rpc_error(e) from None
            return parse(resp)

        return run()

    async def upsert(self, collection: str, version: str, ids, vectors, labels=None, metadata=None, timestamps_ms=None, batch_size: int = 1000, progress: bool = False) -> int:
        """As Client.upsert."""
        dim = (await self.describe(collection, version)).dimension
        n, gen = self._upsert_batches(collection, version, ids, vectors, labels, metadata, timestamps_ms, batch_size, dim)
        bar = _progress(n, progress)

        async def requests():
            for body, count in gen():
                yield body
                if bar is not None:
                    bar.update(count)

        try:
            resp = await self._call("Points", "UpsertStream")(requests(), timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as e:
            raise _stream_error(e) from None
        finally:
            if bar is not None:
                bar.close()
        return int(resp.upserted)

    async def search_batch(self, collection: str, version: str, vectors, k: int = 10, ef: int = 0, exact: bool = False, labels=None, metadata=None, batch_size: int = 1000, concurrency: int = 2):
        """As Client.search_batch."""
        import asyncio

        dim = (await self.describe(collection, version)).dimension
        n, reqs = self._search_batch_requests(collection, version, vectors, k, ef, exact, labels, metadata, batch_size, dim)
        call = self._call("Points", "SearchBatch")
        sem = asyncio.Semaphore(max(1, int(concurrency)))

        async def one(body):
            async with sem:
                return await call(body, timeout=self.timeout, metadata=self._metadata)

        try:
            responses = await asyncio.gather(*(one(body) for body in reqs))
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return _batch_hits(responses, n, int(k))

    async def download_snapshot(self, name: str, out) -> int:
        """As Client.download_snapshot."""
        return await self._save_archive("Snapshots", "DownloadSnapshot", pb.DownloadSnapshotRequest(name=name), out)

    async def _save_archive(self, service: str, rpc: str, req, out) -> int:
        sink = _ArchiveSink(out)
        try:
            async for chunk in self._call(service, rpc)(req, timeout=self.timeout, metadata=self._metadata):
                if sink.take(chunk):
                    return sink.written
            sink.fail("the download ended before the archive's checksum")
        except grpc.aio.AioRpcError as e:
            sink.discard()
            raise from_rpc_error(e) from None
        except BaseException:
            sink.discard()
            raise

    async def export_bundle(self, collection: str, current, baseline, out, k=None, include_points: bool = True, max_points=None, threshold=None, calibrate: bool = False, sample_size=None, seed=None) -> int:
        """As Client.export_bundle."""
        req = self._bundle_request(collection, current, baseline, k, include_points, max_points, threshold, calibrate, sample_size, seed)
        return await self._save_archive("Operations", "ExportBundle", req, out)

    async def download_bundle(self, name: str, out) -> int:
        """As Client.download_bundle."""
        return await self._save_archive("Operations", "DownloadBundle", pb.DownloadBundleRequest(name=name), out)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
