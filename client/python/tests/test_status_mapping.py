"""Every status a caller handles arrives as its own exception, over a real gRPC connection.

EmberDB itself cannot yet be made to answer UNAUTHENTICATED or PERMISSION_DENIED (keys come with
the access-control work), so this test serves DescribeVersion from a small grpcio server that
aborts with the status named in the request; test_client.py covers the codes the real server sends.
"""
from concurrent import futures

import grpc
import pytest

import emberdb
from emberdb._proto import pb

CODES = {
    "INVALID_ARGUMENT": emberdb.InvalidArgument,
    "NOT_FOUND": emberdb.NotFound,
    "ALREADY_EXISTS": emberdb.AlreadyExists,
    "FAILED_PRECONDITION": emberdb.FailedPrecondition,
    "RESOURCE_EXHAUSTED": emberdb.ResourceExhausted,
    "UNAUTHENTICATED": emberdb.Unauthenticated,
    "PERMISSION_DENIED": emberdb.PermissionDenied,
    "DEADLINE_EXCEEDED": emberdb.DeadlineExceeded,
    "UNAVAILABLE": emberdb.Unavailable,
    "INTERNAL": emberdb.EmberError,
    "OUT_OF_RANGE": emberdb.EmberError,
}


@pytest.fixture(scope="module")
def aborting_server():
    seen = []

    def describe(request, context):
        seen.append(dict(context.invocation_metadata()))
        context.abort(getattr(grpc.StatusCode, request.collection), f"status {request.collection} for {request.version}")

    handler = grpc.method_handlers_generic_handler(
        "emberdb.v1.Collections",
        {
            "DescribeVersion": grpc.unary_unary_rpc_method_handler(
                describe,
                request_deserializer=pb.DescribeVersionRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", seen
    server.stop(None)


@pytest.mark.parametrize("code", sorted(CODES))
def test_status_maps_to_exception(aborting_server, code):
    addr, _ = aborting_server
    with emberdb.Client(addr, timeout=10) as c:
        with pytest.raises(emberdb.EmberError) as e:
            c.describe(code, "v1")
    assert type(e.value) is CODES[code]
    assert e.value.code == code
    assert e.value.message == f"status {code} for v1"


def test_api_key_is_sent_as_bearer_metadata(aborting_server):
    addr, seen = aborting_server
    with emberdb.Client(addr, api_key="s3cret", timeout=10) as c:
        with pytest.raises(emberdb.Unauthenticated):
            c.describe("UNAUTHENTICATED", "v1")
    assert seen[-1].get("authorization") == "Bearer s3cret"


def test_async_status_maps_to_exception(aborting_server):
    import asyncio

    addr, _ = aborting_server

    async def run():
        async with emberdb.AsyncClient(addr, timeout=10) as c:
            with pytest.raises(emberdb.PermissionDenied):
                await c.describe("PERMISSION_DENIED", "v1")

    asyncio.run(run())
