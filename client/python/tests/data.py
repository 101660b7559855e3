"""Seeded test data: labelled Gaussian clusters with a planted confusion between two classes."""
import numpy as np


def clusters(n_per=60, dim=16, classes=5, seed=11):
    """classes x n_per points; class c1 nearly shares c0's centre (planted confusion)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 5.0, size=(classes, dim))
    centres[1] = centres[0] + rng.normal(0.0, 0.4, size=dim)
    xs = np.vstack([centres[c] + rng.normal(0.0, 1.0, size=(n_per, dim)) for c in range(classes)])
    labels = [f"c{c}" for c in range(classes) for _ in range(n_per)]
    ids = np.arange(xs.shape[0], dtype=np.int64) + 1000
    return ids, xs, labels
