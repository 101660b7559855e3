"""Typed results. Every report is a frozen dataclass that mirrors its proto message field for
field (same snake_case names), with numeric repeated fields as numpy arrays, optional fields as
None when unset, nested messages as nested dataclasses, and the message itself under `.raw`.
Reports that hold tables have `to_pandas(table=...)` (pandas is the `emberdb[pandas]` extra).

Enums come out as strings: metrics as "l2" / "cosine" / "dot", version states as "ready" /
"indexing", every other enum by its proto value name ("PROMOTE", "MEAN_SHIFT", "CHECKSUM_OK", ...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._proto import pb

# ----------------------------------------------------------------------------- conversion

_REPEATED = 3  # FieldDescriptor.LABEL_REPEATED
_DTYPES = {
    1: np.float64,  # double
    2: np.float32,  # float
    3: np.int64,  # int64
    4: np.int64,  # uint64 (ids; see README: ids are 0..2**63-1)
    5: np.int64,  # int32
    8: np.bool_,  # bool
    13: np.int64,  # uint32
}
_TYPE_STRING, _TYPE_MESSAGE, _TYPE_ENUM = 9, 11, 14

_SHORT_ENUMS = {"Metric": "METRIC_", "VersionState": "VERSION_STATE_", "EvalMode": "EVAL_MODE_"}


def enum_name(enum_desc, number: int) -> str:
    """The user-facing string of an enum value (see the module doc)."""
    value = enum_desc.values_by_number.get(number)
    name = value.name if value is not None else str(number)
    prefix = _SHORT_ENUMS.get(enum_desc.name)
    if prefix and name.startswith(prefix):
        return name[len(prefix) :].lower()
    return name


def enum_number(enum_name_: str, value: str, field: str) -> int:
    """The proto number of a user-facing enum string (case-insensitive), or ValueError naming the field."""
    desc = pb.enums[enum_name_]
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a str, got {type(value).__name__}")
    wanted = value.strip().upper()
    prefix = _SHORT_ENUMS.get(enum_name_, "")
    for v in desc.values:
        if v.number == 0 and "UNSPECIFIED" in v.name:
            continue
        if v.name == wanted or v.name == prefix + wanted:
            return v.number
    choices = [enum_name(desc, v.number).lower() for v in desc.values if "UNSPECIFIED" not in v.name]
    raise ValueError(f"{field} must be one of {choices}, got {value!r}")


def _is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == _REPEATED


def from_proto(cls, msg):
    """Builds dataclass `cls` from `msg`, field for field (see the module doc)."""
    kwargs = {}
    nested = getattr(cls, "_nested", {})
    by_name = msg.DESCRIPTOR.fields_by_name
    for f in fields(cls):
        if f.name == "raw":
            kwargs["raw"] = msg
            continue
        fd = by_name[f.name]
        v = getattr(msg, f.name)
        if _is_repeated(fd):
            if fd.type == _TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
                kwargs[f.name] = dict(v)
            elif fd.type == _TYPE_MESSAGE:
                kwargs[f.name] = tuple(from_proto(nested[f.name], m) for m in v)
            elif fd.type == _TYPE_STRING:
                kwargs[f.name] = tuple(v)
            elif fd.type == _TYPE_ENUM:
                kwargs[f.name] = tuple(enum_name(fd.enum_type, x) for x in v)
            else:
                kwargs[f.name] = np.array(v, dtype=_DTYPES[fd.type])
        elif fd.type == _TYPE_MESSAGE:
            kwargs[f.name] = from_proto(nested[f.name], v) if msg.HasField(f.name) else None
        elif getattr(fd, "has_presence", False) and not msg.HasField(f.name):
            kwargs[f.name] = None
        elif fd.type == _TYPE_ENUM:
            kwargs[f.name] = enum_name(fd.enum_type, v)
        else:
            kwargs[f.name] = v
    return cls(**kwargs)


def _pd():
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_pandas() needs pandas: pip install 'emberdb[pandas]'") from e
    return pd


def _frame(rows: Tuple[Any, ...], columns: List[str]):
    """A DataFrame with one row per nested record; repeated fields become list cells."""
    pd = _pd()
    data = {c: [_cell(getattr(r, c)) for r in rows] for c in columns}
    return pd.DataFrame(data, columns=columns)


def _cell(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _columns(cls) -> List[str]:
    return [f.name for f in fields(cls) if f.name != "raw"]


class _Tables:
    """Mixin: `to_pandas(table)` over named tables; the first is the default."""

    _tables: Dict[str, Any] = {}

    def to_pandas(self, table: Optional[str] = None):
        names = list(self._tables)
        name = table or names[0]
        if name not in self._tables:
            raise ValueError(f"table must be one of {names}, got {table!r}")
        return self._tables[name](self)


_frozen = dataclass(frozen=True, eq=False)

# ----------------------------------------------------------------------------- collections


@_frozen
class HnswParams:
    m: int
    ef_construction: int
    raw: Any = dataclasses.field(repr=False)


@_frozen
class VersionInfo:
    """A version. `dim`, `points` and `indexed` are short names for dimension, point_count and
    indexed_count."""

    collection: str
    version: str
    dimension: int
    metric: str
    point_count: int
    indexed_count: int
    state: str
    hnsw: Optional[HnswParams]
    created_ms: int
    raw: Any = dataclasses.field(repr=False)

    @property
    def dim(self) -> int:
        return self.dimension

    @property
    def points(self) -> int:
        return self.point_count

    @property
    def indexed(self) -> int:
        return self.indexed_count


VersionInfo._nested = {"hnsw": HnswParams}


@_frozen
class CollectionInfo:
    """A collection; `aliases` maps alias name to version name (the proto's AliasInfo list)."""

    name: str
    versions: List[VersionInfo]
    aliases: Dict[str, str]
    raw: Any = dataclasses.field(repr=False)

    @classmethod
    def _from(cls, msg) -> "CollectionInfo":
        return cls(
            name=msg.name,
            versions=[from_proto(VersionInfo, v) for v in msg.versions],
            aliases={a.alias: a.version for a in msg.aliases},
            raw=msg,
        )


# ----------------------------------------------------------------------------- points


@_frozen
class Points(_Tables):
    """Points found by `get`, in request order (missing ids left out). `vectors` is (n, dim)
    float32, or None unless `with_vectors=True`."""

    ids: np.ndarray
    labels: List[str]
    metadata: List[Dict[str, str]]
    timestamps_ms: np.ndarray
    vectors: Optional[np.ndarray]
    raw: Any = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def _points(self):
        pd = _pd()
        data = {"id": self.ids, "label": self.labels, "metadata": self.metadata, "timestamp_ms": self.timestamps_ms}
        if self.vectors is not None:
            data["vector"] = list(self.vectors)
        return pd.DataFrame(data)

    _tables = {"points": _points}


@_frozen
class Hits(_Tables):
    """Nearest first (ties to the lower id); at most k."""

    ids: np.ndarray
    distances: np.ndarray
    labels: List[str]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def _hits(self):
        return _pd().DataFrame({"id": self.ids, "distance": self.distances, "label": self.labels})

    _tables = {"hits": _hits}


@_frozen
class BatchHits(_Tables):
    """One row per query. A query with fewer than k hits (a small version or a narrow filter) is
    padded with id -1 and distance +inf; `counts` says how many are real."""

    ids: np.ndarray
    distances: np.ndarray
    labels: List[List[str]]
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def _hits(self):
        pd = _pd()
        q = np.repeat(np.arange(len(self)), self.counts)
        rank = np.concatenate([np.arange(c) for c in self.counts]) if len(self) else np.array([], dtype=np.int64)
        mask = self.ids >= 0
        return pd.DataFrame(
            {
                "query": q,
                "rank": rank,
                "id": self.ids[mask],
                "distance": self.distances[mask],
                "label": [lb for row in self.labels for lb in row],
            }
        )

    _tables = {"hits": _hits}


# ----------------------------------------------------------------------------- evaluation


@_frozen
class RecallReport(_Tables):
    mode: str
    recall_at_k: float
    precision_at_1: float
    hit_at_k: float
    mrr: float
    map_at_r: float
    knn_accuracy: float
    queries: int
    query_ids: np.ndarray
    ann_latency_p50_ms: float
    exact_latency_p50_ms: float
    k: int
    ef: int
    recall_min: float
    recall_p5: float
    queries_below_1: int
    labelled_queries: int
    map_at_r_queries: int
    raw: Any = dataclasses.field(repr=False)

    def _summary(self):
        cols = [c for c in _columns(RecallReport) if c != "query_ids"]
        return _pd().DataFrame([{c: getattr(self, c) for c in cols}])

    def _queries(self):
        return _pd().DataFrame({"query_id": self.query_ids})

    _tables = {"summary": _summary, "queries": _queries}


@_frozen
class ClassMargin:
    label: str
    count: int
    mean_margin: float
    low_margin_fraction: float
    histogram: np.ndarray
    raw: Any = dataclasses.field(repr=False)


@_frozen
class LowMarginSample:
    id: int
    label: str
    nearest_id: int
    nearest_label: str
    d1: float
    second_id: int
    second_label: str
    d2: float
    margin: float
    raw: Any = dataclasses.field(repr=False)


@_frozen
class MarginReport(_Tables):
    mode: str
    mean: float
    median: float
    p10: float
    low_margin_count: int
    low_margin_fraction: float
    classes: Tuple[ClassMargin, ...]
    lowest: Tuple[LowMarginSample, ...]
    threshold: float
    points: int
    approximate_agreement: Optional[float]
    histogram_edges: np.ndarray
    raw: Any = dataclasses.field(repr=False)

    _tables = {
        "classes": lambda self: _frame(self.classes, _columns(ClassMargin)),
        "lowest": lambda self: _frame(self.lowest, _columns(LowMarginSample)),
    }


MarginReport._nested = {"classes": ClassMargin, "lowest": LowMarginSample}


@_frozen
class ConfusionPair:
    true_label: str
    predicted_label: str
    count: int
    rate: float
    share_of_errors: float
    example_ids: np.ndarray
    raw: Any = dataclasses.field(repr=False)


@_frozen
class ClassSummary:
    label: str
    count: int
    accuracy: float
    intra_class_distance: float
    nearest_class: str
    separation: float
    raw: Any = dataclasses.field(repr=False)


@_frozen
class ConfusionReport(_Tables):
    mode: str
    accuracy: float
    errors: int
    pairs: Tuple[ConfusionPair, ...]
    classes: Tuple[ClassSummary, ...]
    concentration: float
    concentrated: bool
    points: int
    approximate_agreement: Optional[float]
    raw: Any = dataclasses.field(repr=False)

    _tables = {
        "pairs": lambda self: _frame(self.pairs, _columns(ConfusionPair)),
        "classes": lambda self: _frame(self.classes, _columns(ClassSummary)),
    }

    def matrix(self):
        """The leave-one-out 1-NN confusion matrix as a square DataFrame: rows are true labels,
        columns predicted labels, both in label order; the diagonal holds the correctly
        classified counts. Needs every pair (call confusion() without top_pairs)."""
        pd = _pd()
        labels = sorted(c.label for c in self.classes)
        m = pd.DataFrame(0, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"), dtype=np.int64)
        errors_by_class: Dict[str, int] = {}
        for p in self.pairs:
            m.loc[p.true_label, p.predicted_label] = p.count
            errors_by_class[p.true_label] = errors_by_class.get(p.true_label, 0) + p.count
        if sum(errors_by_class.values()) != self.errors:
            raise ValueError(
                f"the report holds {len(self.pairs)} pairs covering {sum(errors_by_class.values())} of "
                f"{self.errors} errors; call confusion() without top_pairs for the full matrix"
            )
        for c in self.classes:
            m.loc[c.label, c.label] = c.count - errors_by_class.get(c.label, 0)
        return m


ConfusionReport._nested = {"pairs": ConfusionPair, "classes": ClassSummary}


@_frozen
class ActionItem:
    signal: str
    subject: str
    value: float
    threshold: float
    meaning: str
    action: str
    owner: str
    evidence_ids: np.ndarray
    severity: float
    markdown: str
    raw: Any = dataclasses.field(repr=False)


class ActionList(list):
    """`actions()` returns the items (ranked by severity, highest first) as a list that also
    carries the report's `mode`, the proto under `raw`, and `to_pandas()`."""

    def __init__(self, items, mode: str, raw):
        super().__init__(items)
        self.mode = mode
        self.raw = raw

    def to_pandas(self):
        return _frame(tuple(self), _columns(ActionItem))


@_frozen
class Projection(_Tables):
    """2-D coordinates: `xy` is (n, 2) float64, row i for ids[i] / labels[i]."""

    method: str
    ids: np.ndarray
    labels: List[str]
    xy: np.ndarray
    raw: Any = dataclasses.field(repr=False)

    def _points(self):
        return _pd().DataFrame({"id": self.ids, "label": self.labels, "x": self.xy[:, 0], "y": self.xy[:, 1]})

    _tables = {"points": _points}


# ----------------------------------------------------------------------------- operations


@_frozen
class Window:
    """A set of points: a version (name or alias), optionally cut to [from_ms, to_ms) of the
    points' timestamps. str(w) is the "VERSION[@FROM_MS..TO_MS]" form the client accepts."""

    version: str
    from_ms: Optional[int]
    to_ms: Optional[int]
    raw: Any = dataclasses.field(repr=False, default=None)

    def __str__(self) -> str:
        if self.from_ms is None and self.to_ms is None:
            return self.version
        lo = "" if self.from_ms is None else str(self.from_ms)
        hi = "" if self.to_ms is None else str(self.to_ms)
        return f"{self.version}@{lo}..{hi}"


def parse_window(spec: Any, field: str) -> Window:
    """"VERSION", "VERSION@FROM..TO", "VERSION@FROM..", "VERSION@..TO" (ms), or a Window."""
    if isinstance(spec, Window):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{field} must be a window string 'VERSION[@FROM_MS..TO_MS]'")
    version, at, rng = spec.partition("@")
    if not version:
        raise ValueError(f"{field}: missing version in {spec!r}")
    if not at:
        return Window(version, None, None)
    lo, dots, hi = rng.partition("..")
    if not dots:
        raise ValueError(f"{field}: expected FROM_MS..TO_MS after '@' in {spec!r}")
    try:
        from_ms = int(lo) if lo else None
        to_ms = int(hi) if hi else None
    except ValueError:
        raise ValueError(f"{field}: FROM_MS and TO_MS must be integers in {spec!r}") from None
    return Window(version, from_ms, to_ms)


def window_proto(w: Window):
    msg = pb.Window(version=w.version)
    if w.from_ms is not None:
        msg.from_ms = w.from_ms
    if w.to_ms is not None:
        msg.to_ms = w.to_ms
    return msg


@_frozen
class ClassDrift:
    label: str
    baseline_count: int
    current_count: int
    euclidean: Optional[float]
    cosine: Optional[float]
    raw: Any = dataclasses.field(repr=False)


@_frozen
class ShiftScore:
    kind: str
    z: float
    statistic: float
    raw: Any = dataclasses.field(repr=False)


@_frozen
class Fingerprint:
    primary: str
    scores: Tuple[ShiftScore, ...]
    raw: Any = dataclasses.field(repr=False)


Fingerprint._nested = {"scores": ShiftScore}


@_frozen
class DriftReport(_Tables):
    baseline_points: int
    current_points: int
    centroid_euclidean: float
    centroid_cosine: Optional[float]
    classes: Tuple[ClassDrift, ...]
    ks_max: float
    ks_mean: float
    ks_drifted_share: float
    mmd2: float
    mmd_sample: int
    norm_shift: float
    norm_ratio: float
    drift_score: float
    threshold: float
    threshold_calibrated: bool
    drifted: bool
    fingerprint: Optional[Fingerprint]
    calibration_splits: int
    raw: Any = dataclasses.field(repr=False)

    _tables = {
        "classes": lambda self: _frame(self.classes, _columns(ClassDrift)),
        "fingerprint": lambda self: _frame(self.fingerprint.scores if self.fingerprint else (), _columns(ShiftScore)),
    }


DriftReport._nested = {"classes": ClassDrift, "fingerprint": Fingerprint}


@_frozen
class VersionQuality:
    version: str
    precision_at_1: float
    hit_at_k: float
    map_at_r: float
    mean_margin: float
    low_margin_fraction: float
    ann_recall_at_k: float
    recall_queries: int
    labelled_queries: int
    raw: Any = dataclasses.field(repr=False)


@_frozen
class PairChange:
    true_label: str
    predicted_label: str
    baseline_count: int
    candidate_count: int
    raw: Any = dataclasses.field(repr=False)


@_frozen
class VerdictReason:
    metric: str
    value: float
    threshold: float
    pushes: str
    message: str
    owner: str
    raw: Any = dataclasses.field(repr=False)


_QUALITY = ["precision_at_1", "hit_at_k", "map_at_r", "mean_margin", "low_margin_fraction", "ann_recall_at_k"]


@_frozen
class CanaryReport(_Tables):
    """CompareVersions: `verdict` is "PROMOTE", "HOLD" or "ROLLBACK"."""

    baseline: Optional[VersionQuality]
    candidate: Optional[VersionQuality]
    delta_precision_at_1: float
    delta_hit_at_k: float
    delta_map_at_r: float
    delta_mean_margin: float
    delta_low_margin_fraction: float
    delta_ann_recall_at_k: float
    neighbor_overlap: float
    new_pairs: Tuple[PairChange, ...]
    resolved_pairs: Tuple[PairChange, ...]
    verdict: str
    reasons: Tuple[VerdictReason, ...]
    alias_moved: bool
    k: int
    query_ids: np.ndarray
    shared_ids: int
    raw: Any = dataclasses.field(repr=False)

    def _side_by_side(self):
        """One row per quality metric: baseline, candidate and the delta the server computed."""
        pd = _pd()
        return pd.DataFrame(
            {
                "baseline": [getattr(self.baseline, m) for m in _QUALITY],
                "candidate": [getattr(self.candidate, m) for m in _QUALITY],
                "delta": [getattr(self, "delta_" + m) for m in _QUALITY],
            },
            index=pd.Index(_QUALITY, name="metric"),
        )

    _tables = {
        "side_by_side": _side_by_side,
        "new_pairs": lambda self: _frame(self.new_pairs, _columns(PairChange)),
        "resolved_pairs": lambda self: _frame(self.resolved_pairs, _columns(PairChange)),
        "reasons": lambda self: _frame(self.reasons, _columns(VerdictReason)),
    }


CanaryReport._nested = {
    "baseline": VersionQuality,
    "candidate": VersionQuality,
    "new_pairs": PairChange,
    "resolved_pairs": PairChange,
    "reasons": VerdictReason,
}


@_frozen
class ConsistencyReport:
    stored_points: int
    indexed_points: int
    pending_points: int
    masked_tombstones: int
    stored_not_indexed: np.ndarray
    indexed_not_stored: np.ndarray
    vector_mismatch: np.ndarray
    unreachable: np.ndarray
    checksum: str
    generation: int
    consistent: bool
    repaired: bool
    before_repair: Optional["ConsistencyReport"]
    findings: Tuple[str, ...]
    raw: Any = dataclasses.field(repr=False)


ConsistencyReport._nested = {"before_repair": ConsistencyReport}


@_frozen
class MonitorSpec:
    collection: str
    version: str
    interval_s: int
    k: int
    sample_size: int
    baseline: Optional[Window]
    record_bundles: bool
    raw: Any = dataclasses.field(repr=False)


MonitorSpec._nested = {"baseline": Window}


@_frozen
class MonitorStatus:
    spec: Optional[MonitorSpec]
    last_run_ms: Optional[int]
    recall_at_k: float
    precision_at_1: float
    low_margin_fraction: float
    drift_score: Optional[float]
    consistent: bool
    points: int
    last_error: str
    last_duration_ms: float
    raw: Any = dataclasses.field(repr=False)


MonitorStatus._nested = {"spec": MonitorSpec}

#: Each dataclass and the proto message it mirrors field for field (tests/test_types.py checks it).
@_frozen
class SnapshotVersion:
    collection: str
    version: str
    op_sequence: int
    has_index: bool
    raw: Any = dataclasses.field(repr=False)


@_frozen
class SnapshotInfo:
    """A snapshot of the whole server: restore it offline with
    `emberdb restore --from <data-dir>/snapshots/<name> --data-dir DIR`."""

    name: str
    collection: str
    created_ms: int
    files: int
    bytes: int
    versions: List[SnapshotVersion]
    raw: Any = dataclasses.field(repr=False)


SnapshotInfo._nested = {"versions": SnapshotVersion}


@_frozen
class BundleInfo:
    """An incident bundle a monitor recorded (`record_bundles`); fetch it with
    `download_bundle(name, out)` and replay it with `ember bundle replay`."""

    name: str
    collection: str
    version: str
    created_ms: int
    bytes: int
    raw: Any = dataclasses.field(repr=False)


MIRRORS = {
    HnswParams: "HnswParams",
    VersionInfo: "VersionInfo",
    RecallReport: "RecallReport",
    ClassMargin: "ClassMargin",
    LowMarginSample: "LowMarginSample",
    MarginReport: "MarginReport",
    ConfusionPair: "ConfusionPair",
    ClassSummary: "ClassSummary",
    ConfusionReport: "ConfusionReport",
    ActionItem: "ActionItem",
    Window: "Window",
    ClassDrift: "ClassDrift",
    ShiftScore: "ShiftScore",
    Fingerprint: "Fingerprint",
    DriftReport: "DriftReport",
    VersionQuality: "VersionQuality",
    PairChange: "PairChange",
    VerdictReason: "VerdictReason",
    CanaryReport: "CompareVersionsReport",
    ConsistencyReport: "ConsistencyReport",
    MonitorSpec: "MonitorSpec",
    MonitorStatus: "MonitorStatus",
    SnapshotVersion: "SnapshotVersion",
    SnapshotInfo: "SnapshotInfo",
    BundleInfo: "BundleInfo",
}
