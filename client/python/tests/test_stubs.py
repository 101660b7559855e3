"""The committed compiled protos match proto/: regenerate with scripts/gen_descriptors.py."""
import importlib.util
import pathlib

from google.protobuf import descriptor_pb2

import emberdb

HERE = pathlib.Path(__file__).resolve().parent


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_descriptors", HERE.parent / "scripts" / "gen_descriptors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_descriptors_match_proto_sources():
    fresh = descriptor_pb2.FileDescriptorSet.FromString(_load_generator().compile_descriptor_set())
    committed_path = pathlib.Path(emberdb.__file__).parent / "emberdb_v1.binpb"
    committed = descriptor_pb2.FileDescriptorSet.FromString(committed_path.read_bytes())
    fresh_files = {f.name: f for f in fresh.file}
    committed_files = {f.name: f for f in committed.file}
    assert sorted(fresh_files) == sorted(committed_files), "proto files were added or removed: run scripts/gen_descriptors.py"
    for name, f in fresh_files.items():
        assert f == committed_files[name], f"{name} changed: run client/python/scripts/gen_descriptors.py"


def test_every_rpc_has_a_client_method():
    from emberdb._proto import pb
    from emberdb.client import _RESPONSES

    rpcs = {(s, m.name) for s, d in pb.services.items() for m in d.methods}
    assert rpcs == set(_RESPONSES), "a service gained or lost an RPC: map it in emberdb/client.py"
    for (service, rpc), resp in _RESPONSES.items():
        assert pb.services[service].methods_by_name[rpc].output_type.name == resp
