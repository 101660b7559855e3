"""Snapshots through the real server, restored with `emberdb restore` into a fresh data dir: the
restored server answers exactly as the source did; a damaged snapshot is refused naming the file."""
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

import emberdb
from server import Server, server_binary


def test_snapshot_restore_answers_like_the_source(client, server, collection):
    rng = np.random.default_rng(11)
    data = rng.normal(size=(800, 24)).astype(np.float32)
    labels = [f"c{i % 4}" for i in range(800)]
    client.create_version(collection, "v1", dim=24)
    client.upsert(collection, "v1", np.arange(800), data, labels=labels)
    client.set_alias(collection, "prod", "v1")
    client.set_monitor(collection, "prod", interval_s=3600)
    source_confusion = client.confusion(collection, "prod", mode="exact")
    name = f"snap-{collection}"
    info = client.create_snapshot(name)
    assert isinstance(info, emberdb.SnapshotInfo)
    assert info.name == name and info.files > 0 and info.bytes > 0
    mine = [v for v in info.versions if v.collection == collection]
    assert [(v.version, v.op_sequence) for v in mine] == [("v1", 800)]
    assert name in [s.name for s in client.list_snapshots()]
    with pytest.raises(emberdb.AlreadyExists):
        client.create_snapshot(name)
    # Writes after the snapshot are not in it.
    client.upsert(collection, "v1", np.arange(800, 900), rng.normal(size=(100, 24)).astype(np.float32))

    queries = data[:20] + 0.01
    want = [client.search(collection, "prod", q, k=5, exact=True) for q in queries]
    restored_confusion, restored_monitors = None, None
    tmp = tempfile.mkdtemp(prefix="emberdb-restore-")
    try:
        target = os.path.join(tmp, "restored")
        src = os.path.join(server.data_dir, "snapshots", name)
        out = subprocess.run([server_binary(), "restore", "--from", src, "--data-dir", target], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert name in out.stdout
        restored = Server(target)
        try:
            with emberdb.Client(restored.addr, timeout=60) as r:
                assert r.describe(collection, "prod").points == 800
                for q, w in zip(queries, want):
                    got = r.search(collection, "prod", q, k=5, exact=True)
                    # The source now holds 100 more points; where none of them is nearer, the answers agree.
                    if not (w.ids >= 800).any():
                        assert list(got.ids) == list(w.ids)
                        np.testing.assert_array_equal(got.distances, w.distances)
                restored_confusion = r.confusion(collection, "prod", mode="exact")
                restored_monitors = [(m.spec.collection, m.spec.version) for m in r.list_monitors(collection)]
        finally:
            restored.stop()
        # Evaluation numbers, aliases and monitors come back as the source had them.
        assert restored_confusion is not None
        assert restored_confusion.points == source_confusion.points == 800
        assert restored_confusion.errors == source_confusion.errors
        assert [(p.true_label, p.predicted_label, p.count) for p in restored_confusion.pairs] == [
            (p.true_label, p.predicted_label, p.count) for p in source_confusion.pairs
        ]
        assert restored_monitors == [(collection, "prod")]

        # The same snapshot downloaded as one archive and restored from it.
        archive = os.path.join(tmp, "snap.tar")
        written = client.download_snapshot(name, archive)
        assert written == os.path.getsize(archive) > info.bytes
        target3 = os.path.join(tmp, "from-tar")
        out = subprocess.run([server_binary(), "restore", "--from", archive, "--data-dir", target3], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        again = Server(target3)
        try:
            with emberdb.Client(again.addr, timeout=60) as r:
                got = r.search(collection, "prod", queries[0], k=5, exact=True)
                assert r.describe(collection, "prod").points == 800
                if not (want[0].ids >= 800).any():
                    assert list(got.ids) == list(want[0].ids)
        finally:
            again.stop()
        # A truncated archive is refused and leaves the target empty.
        cut = os.path.join(tmp, "cut.tar")
        with open(archive, "rb") as f, open(cut, "wb") as g:
            g.write(f.read()[: written // 2])
        target4 = os.path.join(tmp, "from-cut")
        out = subprocess.run([server_binary(), "restore", "--from", cut, "--data-dir", target4], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "cut.tar" in out.stderr, out.stderr
        assert not os.path.exists(target4) or not os.listdir(target4)
        with pytest.raises(emberdb.NotFound):
            client.download_snapshot("no-such-snapshot", os.path.join(tmp, "x.tar"))
        assert not os.path.exists(os.path.join(tmp, "x.tar"))

        # A damaged copy: one byte of one SST flipped. Refused, naming the file; the target stays empty.
        bad = os.path.join(tmp, "bad")
        shutil.copytree(src, bad)
        sst = sorted(f for f in os.listdir(os.path.join(bad, "db")) if f.endswith(".sst"))[0]
        path = os.path.join(bad, "db", sst)
        raw = bytearray(open(path, "rb").read())
        raw[len(raw) // 2] ^= 0x01
        open(path, "wb").write(bytes(raw))
        target2 = os.path.join(tmp, "restored2")
        out = subprocess.run([server_binary(), "restore", "--from", bad, "--data-dir", target2], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        assert sst in out.stderr, out.stderr
        assert not os.path.exists(target2) or not os.listdir(target2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        client.delete_snapshot(name)
    assert name not in [s.name for s in client.list_snapshots()]
    with pytest.raises(emberdb.NotFound):
        client.delete_snapshot(name)
