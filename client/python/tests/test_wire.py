"""The hand-written encoders produce what protobuf itself parses back to the same messages."""
import numpy as np
import pytest

from emberdb import _wire
from emberdb._proto import pb


def test_varint_matches_protobuf():
    for n in [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63 - 1, 2**64 - 1]:
        m = pb.DeleteRequest(ids=[n])
        assert m.SerializeToString() == b"\x1a" + _wire.varint(len(_wire.varint(n))) + _wire.varint(n)


def test_upsert_request_round_trips():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(5, 9)).astype(np.float32)
    ids = np.array([0, 1, 300, 2**40, 2**63 - 1], dtype=np.int64)
    labels = ["", "cat", "dög", "x" * 200, "7"]
    metadata = [{}, {"a": "b"}, {"k1": "v1", "k2": ""}, {}, {"é": "ü"}]
    ts = np.array([0, 1, -5, 1_700_000_000_000, 2**62], dtype=np.int64)
    body = _wire.upsert_request(_wire.header("col", "ver"), ids, vectors, labels, metadata, ts)
    got = pb.UpsertRequest.FromString(body)
    want = pb.UpsertRequest(collection="col", version="ver")
    for i in range(5):
        want.points.add(id=int(ids[i]), vector=vectors[i].tolist(), label=labels[i], metadata=metadata[i], timestamp_ms=int(ts[i]))
    assert got == want


def test_search_requests_round_trip():
    v = np.arange(7, dtype=np.float32) / 3
    f = _wire.filter_bytes(["a", "b"], {"k": "v"})
    body = _wire.search_request(_wire.header("c", "v1"), _wire.vector_bytes(v), _wire.search_tail(5, 40, True, f))
    want = pb.SearchRequest(collection="c", version="v1", vector=v.tolist(), k=5, ef=40, exact=True, filter=pb.Filter(labels=["a", "b"], metadata={"k": "v"}))
    assert pb.SearchRequest.FromString(body) == want

    q = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    body = _wire.search_batch_request(_wire.header("c", "v1"), q, _wire.search_tail(3, 0, False, b""))
    want = pb.SearchBatchRequest(collection="c", version="v1", k=3, queries=[pb.SearchQuery(vector=r.tolist()) for r in q])
    assert pb.SearchBatchRequest.FromString(body) == want


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((2, 3, 4)), "2-D"),
        ([[1.0, 2.0], [3.0]], "ragged"),
        (np.array([[1.0, np.nan]]), "non-finite"),
        (np.array([[1e300, 0.0]]), "non-finite"),
        (np.array([["a", "b"]]), "numeric"),
        (np.zeros((0, 4)), "empty"),
    ],
)
def test_as_matrix_refuses(bad, msg):
    with pytest.raises(ValueError, match=msg):
        _wire.as_matrix(bad)


@pytest.mark.parametrize("bad", [[1.5, 2.0], ["1", "2"], [-1, 2], [True, False], np.array([2**63], dtype=np.uint64), [[1, 2]]])
def test_as_ids_refuses(bad):
    with pytest.raises(ValueError, match="ids"):
        _wire.as_ids(bad)


def test_as_matrix_accepts_float64_and_non_contiguous():
    x = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]
    out = _wire.as_matrix(x)
    assert out.dtype == np.dtype("<f4") and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize(
    "v",
    [
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([np.inf, 1.0], dtype=np.float32),
        np.array([np.inf, -np.inf], dtype=np.float32),
        np.array([3e38, 3e38], dtype=np.float64) * 10,
        [1.0, float("nan")],
    ],
)
def test_vector_bytes_refuses_non_finite(v):
    with pytest.raises(ValueError, match="non-finite"):
        _wire.vector_bytes(v)


def test_vector_bytes_fast_and_slow_paths_agree():
    v = np.random.default_rng(3).normal(size=65).astype(np.float32)
    assert _wire.vector_bytes(v) == v.astype("<f4").tobytes()
    assert _wire.vector_bytes(v.astype(np.float64)) == v.tobytes()
    assert _wire.vector_bytes(v.tolist()) == v.tobytes()
    big = np.full(65536, 3.0e38, dtype=np.float32)
    assert _wire.vector_bytes(big) == big.tobytes(), "large finite values must not look infinite"
    with pytest.raises(ValueError, match="1-D"):
        _wire.vector_bytes(np.zeros((2, 2), dtype=np.float32))


def test_vector_bytes_byte_check_agrees_with_isfinite():
    # Every exponent and sign, with mantissas at both ends, at every position of a vector.
    bits = np.array([(s << 31) | (e << 23) | m for s in (0, 1) for e in range(256) for m in (0, 1, 0x400000, 0x7FFFFF)], dtype=np.uint32)
    values = bits.view(np.float32)
    base = np.ones(8, dtype=np.float32)
    for x in values:
        for pos in (0, 7):
            v = base.copy()
            v[pos] = x
            if np.isfinite(x):
                assert _wire.vector_bytes(v) == v.tobytes()
            else:
                with pytest.raises(ValueError, match="finite"):
                    _wire.vector_bytes(v)


def test_search_columns_reader_matches_protobuf():
    from emberdb.client import _hits

    rng = np.random.default_rng(11)
    label_pool = ["", "cat", "dög", "x" * 127, "y" * 300, "猫" * 20]
    id_pool = [0, 1, 127, 128, 16384, 2**35, 2**63 - 1]
    for trial in range(300):
        n = int(rng.integers(0, 40))
        ids = [int(rng.choice(id_pool)) if trial % 2 else int(rng.integers(0, 2**63)) for _ in range(n)]
        dist = [float(rng.choice([0.0, -0.0, 1.5, 3.4e38, float(rng.normal())])) for _ in range(n)]
        labels = [label_pool[int(rng.integers(0, len(label_pool)))] for _ in range(n)]
        cols = pb.SearchResponse(columns=pb.NeighborColumns(ids=ids, distances=dist, labels=labels))
        body = cols.SerializeToString()
        got = _wire.search_columns(body)
        assert got is not None
        assert np.frombuffer(got[0], dtype="<i8").tolist() == ids and got[2] == labels
        assert got[1] == np.array(dist, dtype=np.float32).tobytes()
        h = _hits(body)
        assert h.ids.dtype == np.int64 and h.distances.dtype == np.float32 and h.ids.flags.writeable
        assert h.ids.tolist() == ids and h.distances.tobytes() == np.array(dist, dtype=np.float32).tobytes() and h.labels == labels
        # The same hits as Neighbor submessages (a server that ignores `columns`) decode the same.
        nb = pb.SearchResponse(neighbors=[pb.Neighbor(id=i, distance=d, label=lb) for i, d, lb in zip(ids, dist, labels)]).SerializeToString()
        h2 = _hits(nb)
        assert h2.ids.tolist() == ids and h2.distances.tobytes() == h.distances.tobytes() and h2.labels == labels


def test_search_columns_reader_defers_what_it_does_not_expect():
    from emberdb.client import _hits

    ok = pb.SearchResponse(columns=pb.NeighborColumns(ids=[4], distances=[2.0], labels=["a"])).SerializeToString()
    assert _wire.search_columns(ok) is not None
    assert _wire.search_columns(b"") == (b"", b"", [])
    unknown_top = ok + b"\x18\x05"
    unknown_inner = b"\x12\x02\x20\x01"
    truncated = ok[:-1]
    bad_utf8 = b"\x12\x03\x1a\x01\xff"
    mismatched = pb.SearchResponse(columns=pb.NeighborColumns(ids=[4, 5], distances=[2.0], labels=["a"])).SerializeToString()
    neighbors = pb.SearchResponse(neighbors=[pb.Neighbor(id=3, distance=1.0, label="z")]).SerializeToString()
    for body in (unknown_top, unknown_inner, truncated, bad_utf8, mismatched, neighbors):
        assert _wire.search_columns(body) is None, body
    assert _hits(unknown_top).ids.tolist() == [4]
    assert _hits(neighbors).labels == ["z"]
