"""The rollout example runs end to end on a 5,000-image subset of the real Fashion-MNIST."""
import os
import subprocess
import sys

import pytest

import emberdb
from conftest import REPO

DATA = "/usr/share/datasets/fashion-mnist"


def test_fashion_mnist_rollout(server, collection):
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        pytest.fail(f"{DATA} is missing: scripts/setup-test.sh installs dataset-fashion-mnist")
    script = REPO / "client" / "python" / "examples" / "fashion_mnist_rollout.py"
    out = subprocess.run(
        [sys.executable, str(script), "--addr", server.addr, "--limit", "5000", "--collection", collection],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "upserted 5000 points" in out.stdout
    assert "== canary pixels-v1 -> pca64-v2:" in out.stdout
    with emberdb.Client(server.addr) as c:
        prod = c.describe(collection, "prod").version
        verdict = "PROMOTE" if prod == "pca64-v2" else None
        assert f"prod now serves {prod}" in out.stdout
        if verdict:
            assert ": PROMOTE (prod moved: True)" in out.stdout
        mons = c.list_monitors(collection)
        assert [m.spec.version for m in mons] == ["prod"]
        assert c.describe(collection, "pixels-v1").points == 5000
        c.delete_monitor(collection, "prod")
