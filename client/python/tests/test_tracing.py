"""One tracing span per request: every log line of a request carries its method, request id,
collection and version, and the reply echoes the request id."""
import json
import time

import grpc
import numpy as np

import emberdb
from emberdb._proto import pb
from server import Server


def test_request_span_carries_method_request_id_collection_and_version(tmp_path):
    s = Server(str(tmp_path / "data"), log_level="info,emberdb_server=debug")
    try:
        with emberdb.Client(s.addr) as c:
            c.create_version("traced", "v1", dim=4)
            c.upsert("traced", "v1", [1, 2], np.eye(2, 4, dtype=np.float32))
            search = c._channel.unary_unary("/emberdb.v1.Points/Search", request_serializer=lambda m: m.SerializeToString(), response_deserializer=pb.SearchResponse.FromString)
            req = pb.SearchRequest(collection="traced", version="v1", vector=[1, 0, 0, 0], k=1, exact=True)
            _, call = search.with_call(req, metadata=(("x-request-id", "trace-me-42"),))
            assert dict(call.initial_metadata())["x-request-id"] == "trace-me-42"
            # Without one, the server makes one up and still returns it.
            _, call = search.with_call(req)
            generated = dict(call.initial_metadata())["x-request-id"]
            assert generated and generated != "trace-me-42"
            # An id with unsafe characters, or too long for a log field, is replaced, never echoed.
            for bad in ("bad id with spaces", "x" * 100, 'quote"d'):
                _, call = search.with_call(req, metadata=(("x-request-id", bad),))
                assert dict(call.initial_metadata())["x-request-id"] not in ("", bad)

        deadline = time.monotonic() + 10
        ours = []
        while time.monotonic() < deadline and not ours:
            for line in list(s.log):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                span = rec.get("span", {})
                if span.get("request_id") == "trace-me-42":
                    ours.append(rec)
            time.sleep(0.05)
        assert ours, "no log line carried the request id"
        finished = [r for r in ours if r.get("fields", {}).get("message") == "request finished"]
        assert len(finished) == 1
        span = finished[0]["span"]
        assert span["method"] == "Search" and span["collection"] == "traced"
        assert span["version"] == "v1"
        assert finished[0]["fields"]["code"] == "OK"
    finally:
        s.stop()
