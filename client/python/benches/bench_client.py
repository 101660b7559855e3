"""Python client benchmarks, each a ratio measured in one run against the real server.

1. upsert: Fashion-MNIST's 60,000 x 784 float32 train set from one numpy array, against
   `ember import` of the same data as .npy (+ labels), into fresh versions of the same server,
   interleaved, medians of --rounds. Each load waits until the version is fully indexed, so
   background indexing of one load never overlaps the next.
2. search CPU: client CPU per call (time.process_time over --calls calls) of Client.search against a
   bare grpcio unary call with a pre-built SearchRequest over the same channel, at d = 128 and
   d = 784, interleaved, medians of max(--rounds, 5).
3. search_batch: QPS of Client.search_batch over the 10,000 Fashion-MNIST test queries at --ef
   (the Rust bench's SearchBatch figure at the same ef goes beside it in benches/README.md).

    python client/python/benches/bench_client.py [--rounds 3] [--calls 10000] [--ef 32]
"""
import argparse
import gzip
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import emberdb  # noqa: E402
from emberdb._proto import pb  # noqa: E402
from server import Server, server_binary  # noqa: E402

DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")


def idx_images(path):
    with gzip.open(path) as f:
        raw = f.read()
    n, r, c = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, r * c).astype(np.float32)


def idx_labels(path):
    with gzip.open(path) as f:
        return [f"class-{b}" for b in f.read()[8:]]


def wait_indexed(c, col, ver, timeout=600):
    t = time.time()
    while time.time() - t < timeout:
        d = c.describe(col, ver)
        if d.indexed == d.points:
            return time.time() - t
        time.sleep(0.2)
    raise RuntimeError(f"{col}/{ver} not indexed after {timeout} s")


def bench_upsert(c, addr, train, labels, rounds, tmp):
    npy = os.path.join(tmp, "train.npy")
    np.save(npy, train)
    lab = os.path.join(tmp, "labels.txt")
    with open(lab, "w") as f:
        f.write("\n".join(labels) + "\n")
    ember = server_binary("ember")
    ids = np.arange(len(train))
    rates = {"ember import": [], "python upsert": []}
    for r in range(rounds):
        order = ["ember import", "python upsert"] if r % 2 == 0 else ["python upsert", "ember import"]
        for which in order:
            ver = f"{'cli' if which == 'ember import' else 'py'}-{r}"
            c.create_version("bench", ver, dim=train.shape[1])
            t = time.perf_counter()
            if which == "ember import":
                subprocess.run([ember, "--addr", f"http://{addr}", "import", "bench", ver, npy, "--labels", lab], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                c.upsert("bench", ver, ids, train, labels=labels)
            dt = time.perf_counter() - t
            assert c.describe("bench", ver).points == len(train)
            rates[which].append(len(train) / dt)
            print(f"  round {r}: {which}: {len(train) / dt:,.0f} points/s ({dt:.2f} s)", flush=True)
            wait_indexed(c, "bench", ver)
            c.drop_version("bench", ver)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"upsert 60,000 x 784: python {med['python upsert']:,.0f} points/s, ember import {med['ember import']:,.0f} points/s, ratio {med['python upsert'] / med['ember import']:.2f} (medians of {rounds})")


def bench_search_cpu(c, calls, rounds):
    rng = np.random.default_rng(5)
    # The bare call goes over the client's own channel: one TCP connection for both, so both see
    # the same server-side scheduling (on a 2-vCPU guest, which core a reply wakes up on moves the
    # per-call CPU by tens of microseconds between two connections).
    bare = c._channel.unary_unary("/emberdb.v1.Points/Search", request_serializer=lambda m: m.SerializeToString(), response_deserializer=pb.SearchResponse.FromString)
    for dim in (128, 784):
        ver = f"cpu-{dim}"
        c.create_version("bench", ver, dim=dim)
        data = rng.normal(size=(5000, dim)).astype(np.float32)
        c.upsert("bench", ver, np.arange(5000), data)
        wait_indexed(c, "bench", ver)
        q = data[17] + 0.01
        req = pb.SearchRequest(collection="bench", version=ver, vector=q.tolist(), k=10, ef=32)

        def run_bare():
            t = time.process_time()
            for _ in range(calls):
                bare(req)
            return (time.process_time() - t) / calls * 1e6

        def run_client():
            t = time.process_time()
            for _ in range(calls):
                c.search("bench", ver, q, k=10, ef=32)
            return (time.process_time() - t) / calls * 1e6

        run_bare(), run_client()  # warm-up
        b, cl = [], []
        for _ in range(rounds):
            b.append(run_bare())
            cl.append(run_client())
        mb, mc = statistics.median(b), statistics.median(cl)
        print(f"search CPU per call at d={dim}: bare grpcio {mb:.1f} us, Client.search {mc:.1f} us, overhead {mc - mb:+.1f} us (medians of {rounds} x {calls} calls)", flush=True)
        c.drop_version("bench", ver)


def bench_search_batch(c, train, labels, queries, ef):
    c.create_version("bench", "batch", dim=train.shape[1])
    c.upsert("bench", "batch", np.arange(len(train)), train, labels=labels)
    print(f"  indexed in {wait_indexed(c, 'bench', 'batch'):.1f} s after the last upsert", flush=True)
    exact = c.search_batch("bench", "batch", queries, k=10, exact=True)
    c.search_batch("bench", "batch", queries[:1000], k=10, ef=ef)  # warm-up
    qps = []
    for _ in range(3):
        t = time.perf_counter()
        hits = c.search_batch("bench", "batch", queries, k=10, ef=ef)
        qps.append(len(queries) / (time.perf_counter() - t))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits.ids.tolist(), exact.ids.tolist())])
    print(f"search_batch 10,000 x 784 at ef={ef}: {statistics.median(qps):,.0f} QPS (median of 3: {', '.join(f'{q:,.0f}' for q in qps)}), recall@10 {recall:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--ef", type=int, default=32)
    ap.add_argument("--skip", default="", help="comma-separated: upsert,cpu,batch")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    train = idx_images(DATA / "train-images-idx3-ubyte.gz")
    labels = idx_labels(DATA / "train-labels-idx1-ubyte.gz")
    queries = idx_images(DATA / "t10k-images-idx3-ubyte.gz")
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"))
        try:
            with emberdb.Client(s.addr) as c:
                if "upsert" not in skip:
                    bench_upsert(c, s.addr, train, labels, args.rounds, tmp)
                if "cpu" not in skip:
                    bench_search_cpu(c, args.calls, max(args.rounds, 5))
                if "batch" not in skip:
                    bench_search_batch(c, train, labels, queries, args.ef)
        finally:
            s.stop()


if __name__ == "__main__":
    main()
