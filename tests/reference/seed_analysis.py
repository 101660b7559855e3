"""Reference for EmberDB's evaluation RPCs: the seed analysis in numpy/scikit-learn.

Usage: seed_analysis.py {digits|planted} OUT.json

Writes the dataset (as float32 values) and the reference results:
- leave-one-out 1-NN via sklearn.metrics.pairwise_distances, diagonal +inf, argmin
  (ties go to the lowest index, i.e. the lowest id);
- margin = sort(D)[:,1] - sort(D)[:,0];
- exact kNN (k=10, self excluded) for recall@K;
- precision@1 and MAP@R (pytorch-metric-learning definition) from the exact ranking.
"""
import json
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import pairwise_distances


def planted(seed=20261122):
    """8 classes x 150 points in 32-d; c1 and c2 nearly share a centre (planted confusion),
    c3 overlaps c4 partly, c7 is very spread (high intra-class distance)."""
    rng = np.random.default_rng(seed)
    dim, per = 32, 150
    centres = rng.normal(0.0, 6.0, size=(8, dim))
    centres[2] = centres[1] + rng.normal(0.0, 0.3, size=dim)
    centres[4] = centres[3] + rng.normal(0.0, 1.5, size=dim)
    xs, ys = [], []
    for c in range(8):
        spread = 3.0 if c == 7 else 1.0
        xs.append(centres[c] + rng.normal(0.0, spread, size=(per, dim)))
        ys += [f"c{c}"] * per
    return np.vstack(xs), np.array(ys)


def main():
    which, out = sys.argv[1], sys.argv[2]
    if which == "digits":
        d = load_digits()
        X, y = d.data, np.array([f"digit-{t}" for t in d.target])
    elif which == "planted":
        X, y = planted()
    else:
        raise SystemExit(f"unknown dataset {which}")
    # EmberDB stores float32: compute the reference on exactly those values.
    X = X.astype(np.float32).astype(np.float64)
    n = len(X)

    D = pairwise_distances(X, metric="euclidean")
    np.fill_diagonal(D, np.inf)
    closest = np.argmin(D, axis=1)
    correct = y == y[closest]
    sorted_d = np.sort(D, axis=1)
    margin = sorted_d[:, 1] - sorted_d[:, 0]

    pairs = {}
    for i in np.where(~correct)[0]:
        key = f"{y[i]}->{y[closest[i]]}"
        pairs[key] = pairs.get(key, 0) + 1

    # Exact ranking with ties to the lower index (stable sort on distance).
    order = np.argsort(D, axis=1, kind="stable")
    k = 10
    knn = order[:, :k]
    ap = []
    for i in range(n):
        r = int(np.sum(y == y[i])) - 1
        if r == 0:
            continue
        rel = (y[order[i, :r]] == y[i]).astype(np.float64)
        precision_at = np.cumsum(rel) / np.arange(1, r + 1)
        ap.append(float(np.sum(precision_at * rel) / r))

    json.dump(
        {
            "dim": int(X.shape[1]),
            "vectors": X.astype(np.float32).tolist(),
            "labels": y.tolist(),
            "accuracy": float(correct.mean()),
            "errors": int((~correct).sum()),
            "pairs": pairs,
            "closest": closest.tolist(),
            "margin": margin.tolist(),
            "margin_mean": float(margin.mean()),
            "margin_median": float(np.median(margin)),
            "margin_p10": float(np.percentile(margin, 10)),
            "low_margin_count": int((margin < 0.05).sum()),
            "knn10": knn.tolist(),
            "precision_at_1": float(correct.mean()),
            "map_at_r": float(np.mean(ap)),
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
