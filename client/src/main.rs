//! `ember`: EmberDB's command-line client.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use emberdb_client::{Client, Metric, SearchOptions, formats, pb};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(name = "ember", version, about = "EmberDB command-line client")]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "EMBERDB_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricArg {
    L2,
    Cosine,
    Dot,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Npy,
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a version (and its collection when new).
    Create {
        collection: String,
        version: String,
        #[arg(long)]
        dim: u32,
        #[arg(long, value_enum, default_value = "l2")]
        metric: MetricArg,
        /// HNSW M (0 = server default).
        #[arg(long, default_value_t = 0)]
        m: u32,
        /// HNSW ef_construction (0 = server default).
        #[arg(long, default_value_t = 0)]
        ef_construction: u32,
    },
    /// Import points from a file, streamed in batches.
    Import {
        collection: String,
        version: String,
        /// Input file (.npy, .csv or .jsonl).
        file: PathBuf,
        /// Input format; guessed from the extension when omitted.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// For .npy: a text file with one label per row.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// For .npy: id of the first row.
        #[arg(long, default_value_t = 0)]
        id_offset: u64,
        /// Points per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Search nearest neighbours of a vector given as comma-separated floats, or of a stored point.
    Search {
        collection: String,
        version: String,
        /// Query vector, e.g. "0.1,0.2,0.3".
        #[arg(long, conflicts_with = "id")]
        vector: Option<String>,
        /// Use the stored vector of this point id as the query.
        #[arg(long)]
        id: Option<u64>,
        #[arg(long, default_value_t = 10)]
        k: u32,
        #[arg(long, default_value_t = 0)]
        ef: u32,
        #[arg(long)]
        exact: bool,
        /// Only points with one of these labels (repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Describe a version (by name or alias).
    Describe { collection: String, version: String },
    /// List collections, versions and aliases.
    List,
    /// Point an alias at a version, or delete it with --delete.
    Alias {
        collection: String,
        alias: String,
        version: Option<String>,
        #[arg(long)]
        delete: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut c = Client::connect(cli.addr.clone())
        .await
        .with_context(|| format!("connecting to {}", cli.addr))?;
    match cli.cmd {
        Cmd::Create {
            collection,
            version,
            dim,
            metric,
            m,
            ef_construction,
        } => {
            let metric = match metric {
                MetricArg::L2 => Metric::L2,
                MetricArg::Cosine => Metric::Cosine,
                MetricArg::Dot => Metric::Dot,
            };
            let v = c
                .create_version_with(pb::CreateVersionRequest {
                    collection,
                    version,
                    dimension: dim,
                    metric: metric as i32,
                    hnsw: Some(pb::HnswParams { m, ef_construction }),
                })
                .await?;
            print_version(&v);
        }
        Cmd::Import {
            collection,
            version,
            file,
            format,
            labels,
            id_offset,
            batch,
        } => {
            let format = format.or_else(|| match file.extension()?.to_str()? {
                "npy" => Some(Format::Npy),
                "csv" => Some(Format::Csv),
                "jsonl" | "ndjson" => Some(Format::Jsonl),
                _ => None,
            });
            let points = match format.context("cannot guess the format; pass --format")? {
                Format::Npy => formats::points_from_npy(&file, labels.as_deref(), id_offset)?,
                Format::Csv => formats::points_from_csv(&file)?,
                Format::Jsonl => formats::points_from_jsonl(&file)?,
            };
            let total = points.len() as u64;
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} points {per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let batch = batch.clamp(1, 10_000);
            let chunks: Vec<Vec<pb::Point>> =
                points.chunks(batch).map(<[pb::Point]>::to_vec).collect();
            let b = bar.clone();
            let stream = futures::stream::iter(chunks.into_iter().map(move |points| {
                b.inc(points.len() as u64);
                pb::UpsertRequest {
                    collection: collection.clone(),
                    version: version.clone(),
                    points,
                }
            }));
            let n = c.upsert_stream(stream).await?;
            bar.finish();
            println!("imported {n} of {total} points");
        }
        Cmd::Search {
            collection,
            version,
            vector,
            id,
            k,
            ef,
            exact,
            label,
        } => {
            let query = match (vector, id) {
                (Some(v), _) => v
                    .split(',')
                    .map(|x| x.trim().parse::<f32>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--vector must be comma-separated numbers")?,
                (None, Some(id)) => {
                    c.get(&collection, &version, vec![id], true)
                        .await?
                        .pop()
                        .with_context(|| format!("point {id} not found"))?
                        .vector
                }
                (None, None) => anyhow::bail!("give --vector or --id"),
            };
            let filter = (!label.is_empty()).then(|| pb::Filter {
                labels: label,
                metadata: Default::default(),
            });
            let hits = c
                .search(
                    &collection,
                    &version,
                    query,
                    k,
                    SearchOptions { ef, exact, filter },
                )
                .await?;
            println!("{:>4}  {:>20}  {:>12}  label", "rank", "id", "distance");
            for (i, h) in hits.iter().enumerate() {
                println!(
                    "{:>4}  {:>20}  {:>12.6}  {}",
                    i + 1,
                    h.id,
                    h.distance,
                    h.label
                );
            }
        }
        Cmd::Describe {
            collection,
            version,
        } => print_version(&c.describe(&collection, &version).await?),
        Cmd::List => {
            for col in c.list_collections().await? {
                println!("{}", col.name);
                for v in &col.versions {
                    println!(
                        "  version {:<24} dim {:<6} points {:<10} indexed {}",
                        v.version, v.dimension, v.point_count, v.indexed_count
                    );
                }
                for a in &col.aliases {
                    println!("  alias   {:<24} -> {}", a.alias, a.version);
                }
            }
        }
        Cmd::Alias {
            collection,
            alias,
            version,
            delete,
        } => {
            if delete {
                c.delete_alias(&collection, &alias).await?;
                println!("alias {alias} deleted");
            } else {
                let v = version.context("give the target version, or --delete")?;
                let prev = c.set_alias(&collection, &alias, &v).await?;
                if prev.is_empty() {
                    println!("alias {alias} -> {v}");
                } else {
                    println!("alias {alias} -> {v} (was {prev})");
                }
            }
        }
    }
    Ok(())
}

fn print_version(v: &pb::VersionInfo) {
    let metric = pb::Metric::try_from(v.metric).map_or("?", |m| m.as_str_name());
    let state = pb::VersionState::try_from(v.state).map_or("?", |s| s.as_str_name());
    println!("collection   {}", v.collection);
    println!("version      {}", v.version);
    println!("dimension    {}", v.dimension);
    println!("metric       {metric}");
    println!("points       {}", v.point_count);
    println!("indexed      {}", v.indexed_count);
    println!("state        {state}");
}
