"""Regenerates emberdb/emberdb_v1.binpb, the compiled protos the client builds its messages from.

Run from anywhere with grpcio-tools installed:  python client/python/scripts/gen_descriptors.py
tests/test_stubs.py fails when the committed file no longer matches proto/.
"""
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "proto"
OUT = pathlib.Path(__file__).resolve().parents[1] / "emberdb" / "emberdb_v1.binpb"


def compile_descriptor_set() -> bytes:
    """The FileDescriptorSet of every .proto under proto/emberdb/v1, dependencies first."""
    from grpc_tools import protoc

    files = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "emberdb" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.binpb"
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", "--include_imports", f"--descriptor_set_out={out}", *files])
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        return out.read_bytes()


if __name__ == "__main__":
    OUT.write_bytes(compile_descriptor_set())
    print(f"wrote {OUT}", file=sys.stderr)
