"""The reference HNSW for `ember-graph-bench`: hnswlib on the same data, parameters and queries.

    python hnswlib_ref.py build-search DIR --m 16 --ef-construction 200 --threads 2 --ef 10,16,...
        reads DIR/train.npy, DIR/queries.npy, DIR/truth.npy (ids = row numbers), prints JSON:
        build seconds (wall, CPU), and per ef: recall@10, single-thread QPS (one C++ call over all
        queries on one thread), batch QPS (100 queries per call on `--threads` threads).
    python hnswlib_ref.py pca DIR --dim 64
        projects DIR/train.npy and DIR/queries.npy onto the train set's top principal components
        (numpy SVD) and writes DIR/train_pca.npy and DIR/queries_pca.npy as float32.
"""

import argparse
import json
import resource
import time

import numpy as np


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_search(a):
    import hnswlib

    train = np.load(f"{a.dir}/train.npy")
    queries = np.load(f"{a.dir}/queries.npy")
    truth = np.load(f"{a.dir}/truth.npy")
    k = truth.shape[1]
    index = hnswlib.Index(space="l2", dim=train.shape[1])
    index.init_index(max_elements=len(train), M=a.m, ef_construction=a.ef_construction, random_seed=100)
    index.set_num_threads(a.threads)
    t, c = time.perf_counter(), cpu_seconds()
    index.add_items(train, np.arange(len(train)), num_threads=a.threads)
    build_s, build_cpu = time.perf_counter() - t, cpu_seconds() - c
    rows = []
    for ef in a.ef:
        index.set_ef(max(ef, k))
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        recall = float(np.mean([len(set(l) & set(t)) / k for l, t in zip(labels, truth)]))
        best1 = 0.0
        for _ in range(a.repeats):
            t = time.perf_counter()
            index.knn_query(queries, k=k, num_threads=1)
            best1 = max(best1, len(queries) / (time.perf_counter() - t))
        bestb = 0.0
        for _ in range(a.repeats):
            t = time.perf_counter()
            for i in range(0, len(queries), 100):
                index.knn_query(queries[i : i + 100], k=k, num_threads=a.threads)
            bestb = max(bestb, len(queries) / (time.perf_counter() - t))
        rows.append({"ef": ef, "recall": recall, "qps1": best1, "qps_batch": bestb})
    print(json.dumps({"build_s": build_s, "build_cpu_s": build_cpu, "rows": rows}))


def pca(a):
    train = np.load(f"{a.dir}/train.npy").astype(np.float64)
    queries = np.load(f"{a.dir}/queries.npy").astype(np.float64)
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    w = vt[: a.dim].T
    np.save(f"{a.dir}/train_pca.npy", ((train - mean) @ w).astype(np.float32))
    np.save(f"{a.dir}/queries_pca.npy", ((queries - mean) @ w).astype(np.float32))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["build-search", "pca"])
    p.add_argument("dir")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[10, 16, 32, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    a = p.parse_args()
    build_search(a) if a.cmd == "build-search" else pca(a)


if __name__ == "__main__":
    main()
