"""Every report mirrors its proto message field for field."""
import dataclasses

import pytest

from emberdb import types
from emberdb._proto import pb


@pytest.mark.parametrize("cls, message", sorted(types.MIRRORS.items(), key=lambda kv: kv[1]), ids=lambda x: getattr(x, "__name__", x))
def test_dataclass_mirrors_proto(cls, message):
    proto_fields = [f.name for f in pb.messages[message].DESCRIPTOR.fields]
    ours = [f.name for f in dataclasses.fields(cls) if f.name != "raw"]
    assert ours == proto_fields
    for name, nested in getattr(cls, "_nested", {}).items():
        assert types.MIRRORS[nested] == pb.messages[message].DESCRIPTOR.fields_by_name[name].message_type.name


def test_enum_strings():
    assert types.enum_number("Metric", "cosine", "metric") == 2
    assert types.enum_number("Metric", "L2", "metric") == 1
    assert types.enum_number("EvalMode", "approximate", "mode") == 2
    with pytest.raises(ValueError, match="metric must be one of"):
        types.enum_number("Metric", "manhattan", "metric")
    assert types.enum_name(pb.enums["VersionState"], 1) == "ready"
    assert types.enum_name(pb.enums["Verdict"], 1) == "PROMOTE"


def test_windows():
    assert str(types.parse_window("v1@10..20", "w")) == "v1@10..20"
    w = types.parse_window("v1@..20", "w")
    assert (w.version, w.from_ms, w.to_ms) == ("v1", None, 20)
    assert str(types.parse_window("prod", "w")) == "prod"
    for bad in ["", "@1..2", "v1@x..2", "v1@12"]:
        with pytest.raises(ValueError, match="w"):
            types.parse_window(bad, "w")
