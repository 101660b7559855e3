"""Every Client method against the real server."""
import numpy as np
import pytest

import emberdb
from data import clusters


@pytest.fixture()
def loaded(client, collection):
    """A version holding the planted clusters (300 points, 16-d, 5 labels)."""
    ids, xs, labels = clusters()
    client.create_version(collection, "v1", dim=16)
    ts = 1_700_000_000_000 + np.arange(len(ids), dtype=np.int64)
    assert client.upsert(collection, "v1", ids, xs, labels=labels, timestamps_ms=ts) == len(ids)
    return collection, ids, xs, labels


def test_version_lifecycle_and_aliases(client, collection):
    info = client.create_version(collection, "v1", dim=8, metric="cosine", m=12, ef_construction=100)
    assert isinstance(info, emberdb.VersionInfo)
    assert (info.collection, info.version, info.dim, info.metric) == (collection, "v1", 8, "cosine")
    assert (info.hnsw.m, info.hnsw.ef_construction) == (12, 100)
    assert info.raw.dimension == 8
    client.create_version(collection, "v2", dim=8)
    assert client.set_alias(collection, "prod", "v1") is None
    assert client.set_alias(collection, "prod", "v2") == "v1"
    d = client.describe(collection, "prod")
    assert d.version == "v2" and d.metric == "l2" and d.points == 0 and d.indexed == 0
    cols = {c.name: c for c in client.list_collections()}
    assert [v.version for v in cols[collection].versions] == ["v1", "v2"]
    assert cols[collection].aliases == {"prod": "v2"}
    with pytest.raises(emberdb.FailedPrecondition):
        client.drop_version(collection, "v2")
    client.delete_alias(collection, "prod")
    client.drop_version(collection, "v2")
    assert [v.version for c in client.list_collections() if c.name == collection for v in c.versions] == ["v1"]
    client.drop_collection(collection)
    assert collection not in {c.name for c in client.list_collections()}


def test_upsert_float64_noncontiguous_and_get(client, collection):
    client.create_version(collection, "v1", dim=4)
    base = np.arange(60, dtype=np.float64).reshape(5, 12) / 7.0
    vectors = base[:, ::3]  # (5, 4), not contiguous, float64
    assert not vectors.flags.c_contiguous
    ids = [5, 1, 9, 2**40, 0]
    meta = [{"split": "train"}, {}, {"split": "test", "cam": "3"}, {}, {}]
    n = client.upsert(collection, "v1", ids, vectors, labels=["a", "b", "a", "", "c"], metadata=meta, timestamps_ms=[1, 2, 3, 4, 5], batch_size=2)
    assert n == 5
    got = client.get(collection, "v1", [9, 12345, 5, 2**40, 0], with_vectors=True)
    assert got.ids.tolist() == [9, 5, 2**40, 0]
    assert got.labels == ["a", "a", "", "c"]
    assert got.metadata[0] == {"split": "test", "cam": "3"}
    assert got.timestamps_ms.tolist() == [3, 1, 4, 5]
    np.testing.assert_array_equal(got.vectors, vectors[[2, 0, 3, 4]].astype(np.float32))
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (4, 4)
    assert client.get(collection, "v1", [1]).vectors is None
    df = got.to_pandas()
    assert df["id"].tolist() == [9, 5, 2**40, 0] and df["label"].tolist() == got.labels
    assert client.delete(collection, "v1", [1, 9, 777]) == 2
    assert client.describe(collection, "v1").points == 3


def test_search_and_filters(client, loaded):
    collection, ids, xs, labels = loaded
    q = xs[17]
    hits = client.search(collection, "v1", q, k=5, exact=True)
    assert isinstance(hits, emberdb.Hits)
    assert hits.ids.dtype == np.int64 and hits.distances.dtype == np.float32
    d = np.linalg.norm(xs.astype(np.float32) - q.astype(np.float32), axis=1)
    want = ids[np.lexsort((ids, d))[:5]]
    assert hits.ids.tolist() == want.tolist()
    np.testing.assert_allclose(hits.distances, np.sort(d)[:5], rtol=1e-5)
    assert hits.labels[0] == labels[17]
    ann = client.search(collection, "v1", q, k=5, ef=64)
    assert ann.ids[0] == ids[17]
    only = client.search(collection, "v1", q, k=10, labels=["c3"], exact=True)
    assert set(only.labels) == {"c3"} and len(only) == 10
    df = hits.to_pandas()
    assert df["id"].tolist() == hits.ids.tolist()


def test_search_columns_reply_equals_neighbors_reply(client, loaded):
    """The client asks for `columns`; the server's Neighbor reply to the same request holds the
    same hits (read here with protobuf alone, over the client's channel)."""
    from emberdb._proto import pb

    collection, ids, xs, labels = loaded
    plain = client._channel.unary_unary("/emberdb.v1.Points/Search", request_serializer=lambda m: m.SerializeToString(), response_deserializer=pb.SearchResponse.FromString)
    for i, (k, exact, flt) in enumerate([(5, True, None), (10, False, None), (300, True, None), (7, True, pb.Filter(labels=["c1"])), (3, True, pb.Filter(metadata={"no": "such"}))]):
        q = xs[11 * i]
        req = pb.SearchRequest(collection=collection, version="v1", vector=q.astype(np.float32).tolist(), k=k, ef=64, exact=exact, filter=flt)
        want = plain(req)
        assert not want.HasField("columns")
        req.columns = True
        raw = plain(req)
        assert len(raw.neighbors) == 0 and list(raw.columns.ids) == [n.id for n in want.neighbors]
        got = client.search(collection, "v1", q, k=k, ef=64, exact=exact, labels=list(flt.labels) if flt else None, metadata=dict(flt.metadata) if flt else None)
        assert got.ids.tolist() == [n.id for n in want.neighbors]
        assert got.distances.tolist() == [n.distance for n in want.neighbors]
        assert got.labels == [n.label for n in want.neighbors]


def test_search_batch_matches_single_searches(client, loaded):
    collection, ids, xs, labels = loaded
    q = xs[::7]
    batch = client.search_batch(collection, "v1", q, k=4, exact=True, batch_size=8)
    assert batch.ids.shape == (len(q), 4) and batch.distances.shape == (len(q), 4)
    for i in range(len(q)):
        single = client.search(collection, "v1", q[i], k=4, exact=True)
        assert batch.ids[i].tolist() == single.ids.tolist()
        assert batch.labels[i] == single.labels
    # Fewer matches than k: padded with -1 / inf, counts say how many are real.
    few = client.search_batch(collection, "v1", q[:3], k=100, exact=True, metadata={"nope": "x"})
    assert few.counts.tolist() == [0, 0, 0] and (few.ids == -1).all() and np.isinf(few.distances).all()
    assert len(batch.to_pandas()) == batch.counts.sum()


def test_evaluation_reports(client, loaded):
    collection, ids, xs, labels = loaded
    r = client.recall(collection, "v1", k=5, sample_size=50, seed=3)
    assert isinstance(r, emberdb.RecallReport)
    assert r.queries == 50 and r.k == 5 and 0.0 <= r.recall_at_k <= 1.0
    assert r.query_ids.dtype == np.int64 and len(r.query_ids) == 50
    assert r.to_pandas("queries")["query_id"].tolist() == list(r.raw.query_ids)
    assert r.to_pandas()["recall_at_k"].iloc[0] == r.recall_at_k

    m = client.margin(collection, "v1", threshold=0.5, lowest_n=7, mode="exact")
    assert m.mode == "exact" and m.threshold == 0.5 and len(m.lowest) == 7
    assert m.points == len(ids) and m.approximate_agreement is None
    classes = m.to_pandas("classes")
    assert classes["label"].tolist() == [c.label for c in m.raw.classes]
    assert classes["histogram"].tolist() == [list(c.histogram) for c in m.raw.classes]
    lowest = m.to_pandas("lowest")
    assert lowest["id"].tolist() == [s.id for s in m.raw.lowest]
    assert lowest["margin"].tolist() == [s.margin for s in m.raw.lowest]
    assert len(m.histogram_edges) == 21

    c = client.confusion(collection, "v1")
    assert c.errors > 0, "the planted c0/c1 confusion shows up"
    top = c.pairs[0]
    assert {top.true_label, top.predicted_label} == {"c0", "c1"}
    pairs = c.to_pandas("pairs")
    assert pairs[["true_label", "predicted_label", "count"]].values.tolist() == [[p.true_label, p.predicted_label, p.count] for p in c.raw.pairs]
    assert pairs["example_ids"].tolist() == [list(p.example_ids) for p in c.raw.pairs]
    cls = c.to_pandas("classes")
    assert cls["accuracy"].tolist() == [x.accuracy for x in c.raw.classes]
    mat = c.matrix()
    assert list(mat.index) == list(mat.columns) == ["c0", "c1", "c2", "c3", "c4"]
    assert int(mat.values.sum()) == c.points
    assert int(mat.values.sum() - np.trace(mat.values)) == c.errors
    assert mat.loc[top.true_label, top.predicted_label] == top.count
    limited = client.confusion(collection, "v1", top_pairs=1)
    assert len(limited.pairs) == 1
    if c.errors > limited.pairs[0].count:
        with pytest.raises(ValueError, match="top_pairs"):
            limited.matrix()
    with pytest.raises(ValueError, match="table must be one of"):
        c.to_pandas("nope")

    items = client.actions(collection, "v1", format="markdown")
    assert isinstance(items, emberdb.ActionList) and items.mode in ("exact", "approximate")
    assert items, "a planted confusion yields at least one action item"
    assert all(isinstance(i, emberdb.ActionItem) for i in items)
    assert any(i.signal == "STRONG_CONFUSION_PAIR" for i in items)
    assert all(i.markdown for i in items)
    sev = [i.severity for i in items]
    assert sev == sorted(sev, reverse=True)
    assert items.to_pandas()["subject"].tolist() == [i.subject for i in items.raw.items]

    p = client.project(collection, "v1", sample_size=100, seed=1)
    assert p.method == "pca" and p.xy.shape == (100, 2) and p.ids.shape == (100,)
    assert p.to_pandas()["x"].tolist() == [q.x for q in p.raw.points]


def test_drift_canary_consistency_monitors(client, loaded):
    collection, ids, xs, labels = loaded
    # A second model version: the same ids, shifted by a constant (a planted mean shift).
    client.create_version(collection, "v2", dim=16)
    client.upsert(collection, "v2", ids, xs + 3.0, labels=labels)
    d = client.drift(collection, "v1", "v2", seed=5)
    assert isinstance(d, emberdb.DriftReport)
    assert d.drifted and d.baseline_points == d.current_points == len(ids)
    assert d.fingerprint.primary == "MEAN_SHIFT"
    assert [s.kind for s in d.fingerprint.scores][0] == "MEAN_SHIFT"
    assert d.to_pandas()["label"].tolist() == [c.label for c in d.raw.classes]
    assert d.to_pandas("fingerprint")["z"].tolist() == [s.z for s in d.raw.fingerprint.scores]
    same = client.drift(collection, "v1@1700000000000..1700000000150", "v1@1700000000150..", seed=5)
    assert same.baseline_points == 150 and same.current_points == 150

    client.set_alias(collection, "prod", "v1")
    cr = client.compare_versions(collection, "prod", "v2", k=5, promote_alias="prod")
    assert isinstance(cr, emberdb.CanaryReport)
    assert cr.verdict in ("PROMOTE", "HOLD", "ROLLBACK")
    assert cr.shared_ids == len(ids) and cr.baseline.version == "v1" and cr.candidate.version == "v2"
    assert cr.alias_moved == (cr.verdict == "PROMOTE")
    side = cr.to_pandas()
    assert side.loc["precision_at_1", "baseline"] == cr.baseline.precision_at_1
    assert side.loc["map_at_r", "delta"] == cr.delta_map_at_r

    ok = client.check_consistency(collection, "v1")
    assert isinstance(ok, emberdb.ConsistencyReport)
    assert ok.stored_points == len(ids) and ok.checksum.startswith("CHECKSUM_")
    assert ok.unreachable.dtype == np.int64 and ok.before_repair is None

    assert client.set_monitor(collection, "v1", interval_s=3600, k=5, sample_size=20, baseline="v1@..1700000000100") is False
    assert client.set_monitor(collection, "v1", interval_s=3600, k=5, sample_size=20) is True
    mons = [m for m in client.list_monitors(collection)]
    assert len(mons) == 1 and mons[0].spec.version == "v1" and mons[0].spec.k == 5
    assert mons[0].spec.baseline is None
    client.delete_monitor(collection, "v1")
    assert client.list_monitors(collection) == []


def test_errors_map_to_exceptions(client, collection):
    with pytest.raises(emberdb.NotFound) as e:
        client.describe(collection, "missing")
    assert e.value.code == "NOT_FOUND" and collection in e.value.message
    client.create_version(collection, "v1", dim=3)
    with pytest.raises(emberdb.AlreadyExists):
        client.create_version(collection, "v1", dim=3)
    with pytest.raises(emberdb.InvalidArgument, match="vector"):
        client.search(collection, "v1", [1.0, 2.0], k=3)
    with pytest.raises(emberdb.InvalidArgument, match="k"):
        client.search(collection, "v1", [1.0, 2.0, 3.0], k=0)
    with emberdb.Client(client.address, options=[("grpc.max_receive_message_length", 10)]) as tiny:
        with pytest.raises(emberdb.ResourceExhausted):
            tiny.list_collections()
    with emberdb.Client("127.0.0.1:1", timeout=5) as nowhere:
        with pytest.raises(emberdb.Unavailable):
            nowhere.list_collections()
    with pytest.raises(emberdb.EmberError):
        client.describe(collection, "missing")


def test_upsert_error_says_what_was_committed(client, collection):
    client.create_version(collection, "v1", dim=2)
    # The server refuses labels over 256 bytes; the second batch has one, after the first committed.
    labels = ["a"] * 5 + ["x" * 300]
    with pytest.raises(emberdb.InvalidArgument) as e:
        client.upsert(collection, "v1", [1, 2, 3, 4, 5, 6], np.ones((6, 2)), labels=labels, batch_size=4)
    assert e.value.committed == 4, e.value.message
    assert client.describe(collection, "v1").points == 4


def test_upsert_progress_bar(client, collection, capsys):
    import tqdm  # noqa: F401  (make test installs it; the bar is drawn only when it is there)

    assert tqdm.__version__
    client.create_version(collection, "v1", dim=2)
    assert client.upsert(collection, "v1", list(range(30)), np.ones((30, 2)), batch_size=10, progress=True) == 30
    err = capsys.readouterr().err
    assert "upsert" in err and "30/30" in err, err
