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
