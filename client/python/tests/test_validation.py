"""Shape, dtype and id mistakes raise ValueError and send nothing: stored data stays as it was."""
import numpy as np
import pytest

import emberdb


@pytest.fixture()
def version(client, collection):
    client.create_version(collection, "v1", dim=4)
    client.upsert(collection, "v1", [1, 2], np.eye(4)[:2])
    return collection


@pytest.mark.parametrize(
    "ids, vectors, kwargs, match",
    [
        ([3, 4], np.zeros((2, 5)), {}, "dimension 5"),
        ([3, 4], np.zeros(4), {}, "2-D"),
        ([3, 4], [[0, 0, 0, 0], [0, 0, 0]], {}, "ragged"),
        ([3, 4], np.array([[0, 0, np.nan, 0], [0, 0, 0, 0]]), {}, "non-finite"),
        ([3, 4], np.array([[0, 0, np.inf, 0], [0, 0, 0, 0]]), {}, "non-finite"),
        ([3.0, 4.0], np.zeros((2, 4)), {}, "ids must be integers"),
        (["3", "4"], np.zeros((2, 4)), {}, "ids must be integers"),
        ([3, -4], np.zeros((2, 4)), {}, "non-negative"),
        ([3], np.zeros((2, 4)), {}, "ids has 1 entries"),
        ([3, 4], np.zeros((2, 4)), {"labels": ["a"]}, "labels has 1"),
        ([3, 4], np.zeros((2, 4)), {"labels": [1.5, "b"]}, "labels\\[0\\]"),
        ([3, 4], np.zeros((2, 4)), {"metadata": [{"a": 1}, {}]}, "metadata\\[0\\]"),
        ([3, 4], np.zeros((2, 4)), {"timestamps_ms": [1.5, 2.5]}, "timestamps_ms"),
        ([3, 4], np.zeros((2, 4)), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_upsert_sends_nothing(client, version, ids, vectors, kwargs, match):
    with pytest.raises(ValueError, match=match):
        client.upsert(version, "v1", ids, vectors, **kwargs)
    assert client.describe(version, "v1").points == 2
    assert client.get(version, "v1", [3, 4]).ids.tolist() == []


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c, v: c.search(v, "v1", np.zeros((1, 4))), "1-D"),
        (lambda c, v: c.search(v, "v1", [0, float("nan"), 0, 0]), "non-finite"),
        (lambda c, v: c.search(v, "v1", [0, 0, 0, 0], k=-1), "k must be"),
        (lambda c, v: c.search_batch(v, "v1", np.zeros((3, 5))), "dimension 5"),
        (lambda c, v: c.search_batch(v, "v1", np.zeros(4)), "2-D"),
        (lambda c, v: c.get(v, "v1", [1.2]), "ids"),
        (lambda c, v: c.delete(v, "v1", [1, -2]), "non-negative"),
        (lambda c, v: c.margin(v, "v1", mode="fast"), "mode must be one of"),
        (lambda c, v: c.create_version(v, "v9", dim=4, metric="hamming"), "metric must be one of"),
        (lambda c, v: c.drift(v, "v1", "v1@a..b"), "current"),
        (lambda c, v: c.recall(v, "v1", k=1.5), "k must be"),
    ],
)
def test_bad_arguments_send_nothing(client, version, call, match):
    with pytest.raises(ValueError, match=match):
        call(client, version)
    assert client.describe(version, "v1").points == 2
    assert [v.version for c in client.list_collections() if c.name == version for v in c.versions] == ["v1"]


def test_constructor_arguments():
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        emberdb.Client("127.0.0.1:1", tls_cert=b"x")
    with pytest.raises(ValueError, match="timeout"):
        emberdb.Client("127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="api_key"):
        emberdb.Client("127.0.0.1:1", api_key="")
