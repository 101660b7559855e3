"""Incident bundles through the real server: ExportBundle writes one .tar.gz whose manifest
checksums every file, whose vectors are the stored ones byte for byte, and whose reports match the
Drift RPC's; a monitor set with record_bundles reports it back."""
import asyncio
import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

import emberdb


def _files(path):
    with tarfile.open(path, "r:gz") as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def test_export_bundle_holds_the_points_and_the_figures(client, collection, tmp_path):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(300, 12)).astype(np.float32)
    cur = (rng.normal(size=(300, 12)) + 0.8).astype(np.float32)
    client.create_version(collection, "v1", dim=12)
    labels = [f"c{i % 3}" for i in range(600)]
    client.upsert(collection, "v1", np.arange(600), np.vstack([base, cur]), labels=labels,
                  metadata=[{"cam": str(i % 2)} for i in range(600)], timestamps_ms=[0] * 300 + [100] * 300)
    out = tmp_path / "b.tar.gz"
    n = client.export_bundle(collection, "v1@100..", "v1@..100", out, k=3, seed=1)
    assert n == out.stat().st_size > 0
    files = _files(out)
    manifest = json.loads(files["manifest.json"])
    assert list(files)[0] == "manifest.json"
    for f in manifest["files"]:
        assert hashlib.sha256(files[f["path"]]).hexdigest() == f["sha256"], f["path"]
    assert manifest["current"]["bundled_points"] == 300 and not manifest["current"]["sampled"]
    assert manifest["k"] == 3 and manifest["drift_request"]["seed"] == 1
    vectors = np.load(io.BytesIO(files["points/current/vectors.npy"]))
    assert vectors.dtype == np.float32 and np.array_equal(vectors, cur)
    lines = [json.loads(l) for l in files["points/current/points.jsonl"].splitlines()]
    assert [p["id"] for p in lines] == list(range(300, 600))
    assert lines[0]["metadata"] == {"cam": "0"} and lines[0]["timestamp_ms"] == 100
    drift = json.loads(files["drift.json"])
    rpc = client.drift(collection, "v1@..100", "v1@100..", seed=1)
    assert drift["drift_score"] == pytest.approx(rpc.drift_score, rel=1e-12)
    assert json.loads(files["eval.json"])["confusion"]["points"] == 300

    with pytest.raises(emberdb.InvalidArgument, match="max_points"):
        client.export_bundle(collection, "v1", "v1", tmp_path / "bad.tar.gz", max_points=0)
    assert not (tmp_path / "bad.tar.gz").exists()


def test_async_export_and_record_bundles_flag(server, client, collection, tmp_path):
    client.create_version(collection, "v1", dim=4)
    client.upsert(collection, "v1", np.arange(40), np.random.default_rng(2).normal(size=(40, 4)).astype(np.float32))
    client.set_monitor(collection, "v1", interval_s=3600, baseline="v1", record_bundles=True)
    assert [m.spec.record_bundles for m in client.list_monitors(collection)] == [True]
    with pytest.raises(emberdb.InvalidArgument, match="record_bundles"):
        client.set_monitor(collection, "v1", interval_s=3600, record_bundles=True)

    async def run():
        async with emberdb.AsyncClient(server.addr, timeout=60) as c:
            return await c.export_bundle(collection, "v1", "v1", tmp_path / "a.tar.gz", include_points=False)

    assert asyncio.run(run()) > 0
    assert not any(k.startswith("points/") for k in _files(tmp_path / "a.tar.gz"))


def test_recorded_bundles_list_and_refuse_bad_names(client, collection, tmp_path):
    client.create_version(collection, "v1", dim=4)
    assert client.list_bundles(collection) == []
    with pytest.raises(emberdb.InvalidArgument, match="name"):
        client.download_bundle("../x", tmp_path / "x.tar.gz")
    with pytest.raises(emberdb.NotFound):
        client.download_bundle(f"{collection}.v1.1.tar.gz", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()
