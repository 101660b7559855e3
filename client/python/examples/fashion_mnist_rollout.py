"""A model rollout on real data, end to end, with the EmberDB Python client.

Two "model versions" embed the same Fashion-MNIST images: raw pixels (784-d, `pixels-v1`, serving
as `prod`) and a 64-d PCA of them (`pca64-v2`, the candidate). The script uploads both, asks where
each one fails (confusion, margin, action items), runs a canary that promotes `prod` to the
candidate only if it is better, and leaves a monitor on `prod`.

    python client/python/examples/fashion_mnist_rollout.py --addr 127.0.0.1:50051 --limit 10000

The images come from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist).
"""
import argparse
import gzip
import pathlib
import sys
import time

import numpy as np

import emberdb

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load(data_dir: pathlib.Path, limit: int):
    """The first `limit` training images as float32 in [0, 1], and their class names."""
    with gzip.open(data_dir / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)[:limit]
    with gzip.open(data_dir / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:limit]
    return images.astype(np.float32) / 255.0, [CLASSES[i] for i in labels]


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist", type=pathlib.Path)
    ap.add_argument("--limit", type=int, default=10_000, help="training images used (at most 60,000)")
    ap.add_argument("--collection", default="fashion")
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args(argv)

    x, labels = load(args.data_dir, args.limit)
    ids = np.arange(len(x))
    versions = {"pixels-v1": x, "pca64-v2": pca(x, 64)}
    col = args.collection

    with emberdb.Client(args.addr, api_key=args.api_key) as c:
        existing = {v.version for info in c.list_collections() if info.name == col for v in info.versions}
        for name, emb in versions.items():
            if name not in existing:
                c.create_version(col, name, dim=emb.shape[1])
            t = time.perf_counter()
            n = c.upsert(col, name, ids, emb, labels=labels)
            print(f"upserted {n} points into {col}/{name} ({emb.shape[1]}-d) in {time.perf_counter() - t:.1f} s")
        c.set_alias(col, "prod", "pixels-v1")

        for name in versions:
            conf = c.confusion(col, name)
            marg = c.margin(col, name)
            print(f"\n== {name}: leave-one-out 1-NN accuracy {conf.accuracy:.4f} ({conf.errors} errors)")
            print(conf.to_pandas()[["true_label", "predicted_label", "count", "rate"]].head(5).to_string(index=False))
            worst = marg.to_pandas("classes").head(3)
            print("least stable classes (margin):")
            print(worst[["label", "count", "mean_margin", "low_margin_fraction"]].to_string(index=False))

        print("\n== action items for prod (pixels-v1)")
        for item in c.actions(col, "prod")[:5]:
            print(f"- [{item.signal}] {item.subject}: {item.action} (owner: {item.owner}, severity {item.severity:.2f})")

        canary = c.compare_versions(col, "prod", "pca64-v2", k=10, promote_alias="prod")
        print(f"\n== canary pixels-v1 -> pca64-v2: {canary.verdict} (prod moved: {canary.alias_moved})")
        print(canary.to_pandas().round(4).to_string())
        for r in canary.reasons:
            print(f"- {r.pushes}: {r.message} (owner: {r.owner})")
        print(f"prod now serves {c.describe(col, 'prod').version}")

        c.set_monitor(col, "prod", interval_s=60, k=10, sample_size=200)
        m = c.list_monitors(col)[0]
        print(f"\nmonitor on {m.spec.collection}/{m.spec.version} every {m.spec.interval_s} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
