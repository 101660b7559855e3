"""Input validation and protobuf wire encoding of the bulk messages, straight from numpy.

Upsert, Search and SearchBatch carry vectors as packed `repeated float` fields, whose wire form is
the little-endian float32 bytes themselves. Encoding them here, from one contiguous array, avoids a
per-element Python (or protobuf) conversion: a 784-d row is one slice of the array's buffer. The
layout follows the protobuf encoding spec; tests/test_wire.py parses every encoder's output back
with the real message classes and compares it with what protobuf itself produces.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ._proto import pb

MAX_ID = (1 << 63) - 1  # ids come back as int64 arrays


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint_slow(i) for i in range(1 << 14)]


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (negative int64s pass as their two's complement)."""
    if 0 <= n < 16384:
        return _SMALL[n]
    return _varint_slow(n & 0xFFFFFFFFFFFFFFFF)


def field_bytes(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: `tag` is the whole key byte, (field << 3) | 2."""
    return bytes((tag,)) + varint(len(payload)) + payload


def header(collection: str, version: str) -> bytes:
    """Fields 1 (collection) and 2 (version), shared by Upsert, Search and SearchBatch requests."""
    return field_bytes(0x0A, _text(collection, "collection")) + field_bytes(0x12, _text(version, "version"))


def _text(s: Any, name: str) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"{name} must be a str, got {type(s).__name__}")
    return s.encode()


# ----------------------------------------------------------------------------- validation


def as_matrix(vectors: Any, name: str = "vectors", dim: Optional[int] = None) -> np.ndarray:
    """An (n, d) C-contiguous little-endian float32 array of finite values, or ValueError."""
    arr = _as_float_array(vectors, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, the version has {dim}")
    return _finite_f32(arr, name)


_F32 = np.dtype("<f4")


def vector_bytes(vector: Any, name: str = "vector") -> bytes:
    """The packed little-endian float32 bytes of one finite query vector, or ValueError.

    The common case, a 1-D contiguous float32 array, is checked on its bytes alone: a float32 is
    non-finite only when its exponent bits are all ones, which needs the top byte's low seven
    bits set (0x7F or 0xFF). When no top byte is either, every value is finite; otherwise (also
    true of finite values above 1.7e38) the full check below decides. One `Search` runs no numpy
    code here: between two gRPC calls the CPU caches are cold, and numpy's dispatch costs ten
    times its warm figure there (benches/README.md, Python client)."""
    if (
        type(vector) is np.ndarray
        and vector.dtype == _F32
        and vector.ndim == 1
        and vector.flags.c_contiguous
        and vector.shape[0] > 0
    ):
        raw = vector.tobytes()
        top = raw[3::4]
        if b"\x7f" not in top and b"\xff" not in top:
            return raw
    return as_vector(vector, name).tobytes()


def as_vector(vector: Any, name: str = "vector", dim: Optional[int] = None) -> np.ndarray:
    """A (d,) little-endian float32 array of finite values, or ValueError."""
    arr = _as_float_array(vector, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (dim,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[0]}, the version has {dim}")
    return _finite_f32(arr, name)


def _as_float_array(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name} is ragged or not numeric: {e}") from None
    if arr.dtype == object:
        raise ValueError(f"{name} is ragged or not numeric (object array)")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _finite_f32(arr: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        out = np.ascontiguousarray(arr, dtype="<f4")
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{name} has a non-finite value (NaN, inf or beyond float32) at index {tuple(int(i) for i in bad)}")
    return out


def as_ids(ids: Any, name: str = "ids", n: Optional[int] = None) -> np.ndarray:
    """A 1-D int64 array of ids in 0..2**63-1, or ValueError (floats, bools and strings are refused)."""
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    try:
        arr = np.asarray(ids)
    except ValueError as e:
        raise ValueError(f"{name} is ragged: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        arr = arr.astype(np.int64)
    elif arr.dtype == object:
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in arr):
            raise ValueError(f"{name} must be integers")
        if any(int(i) < 0 or int(i) > MAX_ID for i in arr):
            raise ValueError(f"{name} must be in 0..2**63-1")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {int(arr.min())}")
    if arr.size and arr.dtype.kind == "u" and arr.max() > MAX_ID:
        raise ValueError(f"{name} must be in 0..2**63-1, got {int(arr.max())}")
    arr = arr.astype(np.int64, copy=False)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, vectors has {n} rows")
    return arr


def as_labels(labels: Any, n: int, name: str = "labels") -> Optional[list]:
    """None, or n labels as str (ints, e.g. class indices, are turned into their decimal text)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        raise ValueError(f"{name} must be a sequence of n labels, not one str")
    out = []
    for i, lb in enumerate(labels):
        if isinstance(lb, str):
            out.append(lb)
        elif isinstance(lb, (int, np.integer)) and not isinstance(lb, bool):
            out.append(str(int(lb)))
        else:
            raise ValueError(f"{name}[{i}] must be a str or an int, got {type(lb).__name__}")
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries, vectors has {n} rows")
    return out


def as_metadata(metadata: Any, n: int, name: str = "metadata") -> Optional[list]:
    if metadata is None:
        return None
    out = []
    for i, m in enumerate(metadata):
        if m is None:
            m = {}
        if not isinstance(m, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
            raise ValueError(f"{name}[{i}] must be a dict of str to str")
        out.append(m)
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries, vectors has {n} rows")
    return out


def as_timestamps(ts: Any, n: int, name: str = "timestamps_ms") -> Optional[np.ndarray]:
    if ts is None:
        return None
    arr = np.asarray(ts)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D sequence of integers (milliseconds since the epoch)")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, vectors has {n} rows")
    return arr.astype(np.int64, copy=False)


def filter_bytes(labels: Optional[Sequence[str]], metadata: Optional[Mapping[str, str]]) -> bytes:
    """Field 7 (Filter) of Search and SearchBatch requests, empty when there is no filter."""
    if not labels and not metadata:
        return b""
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None and not all(isinstance(x, str) for x in labels):
        raise ValueError("labels must be a sequence of str")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("metadata must be a dict of str to str")
    f = pb.Filter(labels=list(labels or ()), metadata=dict(metadata or {}))
    return field_bytes(0x3A, f.SerializeToString())


def _uint32(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= int(value) <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be in 0..2**32-1, got {value}")
    return int(value)


def search_tail(k: Any, ef: Any, exact: bool, filt: bytes, columns: bool = False) -> bytes:
    """Fields 4..8 of Search (columns: ask for the reply as parallel arrays) and 4..7 of
    SearchBatch requests."""
    k = _uint32(k, "k")
    ef = _uint32(ef, "ef")
    out = b"\x20" + varint(k)
    if ef:
        out += b"\x28" + varint(ef)
    if exact:
        out += b"\x30\x01"
    out += filt
    if columns:
        out += b"\x40\x01"
    return out


# ----------------------------------------------------------------------------- encoders


def search_request(head: bytes, vector: bytes, tail: bytes) -> bytes:
    """SearchRequest from the header, the vector's packed float32 bytes and fields 4..7."""
    return b"".join((head, b"\x1a", varint(len(vector)), vector, tail))


def search_batch_request(head: bytes, queries: np.ndarray, tail: bytes) -> bytes:
    """SearchBatchRequest with one SearchQuery per row, laid out in one numpy pass."""
    n, d = queries.shape
    inner = b"\x0a" + varint(4 * d)
    prefix = np.frombuffer(b"\x1a" + varint(len(inner) + 4 * d) + inner, dtype=np.uint8)
    rows = np.empty((n, prefix.size + 4 * d), dtype=np.uint8)
    rows[:, : prefix.size] = prefix
    rows[:, prefix.size :] = queries.view(np.uint8).reshape(n, 4 * d)
    return head + rows.tobytes() + tail


def upsert_request(
    head: bytes,
    ids: np.ndarray,
    vectors: np.ndarray,
    labels: Optional[list],
    metadata: Optional[list],
    timestamps: Optional[np.ndarray],
) -> bytes:
    """UpsertRequest for rows ids[i], vectors[i] (already validated)."""
    n, d = vectors.shape
    row_bytes = 4 * d
    vec_key = b"\x12" + varint(row_bytes)
    buf = memoryview(vectors).cast("B")
    id_list = ids.tolist()
    ts_list = timestamps.tolist() if timestamps is not None else None
    parts = []
    append = parts.append
    for i in range(n):
        pid = id_list[i]
        body = [b"\x08" + varint(pid) if pid else b"", vec_key, buf[i * row_bytes : (i + 1) * row_bytes]]
        if labels is not None and labels[i]:
            lb = labels[i].encode()
            body.append(b"\x1a" + varint(len(lb)) + lb)
        if metadata is not None:
            for key, value in metadata[i].items():
                kb, vb = key.encode(), value.encode()
                entry = b"\x0a" + varint(len(kb)) + kb + b"\x12" + varint(len(vb)) + vb
                body.append(b"\x22" + varint(len(entry)) + entry)
        if ts_list is not None and ts_list[i]:
            body.append(b"\x28" + varint(ts_list[i]))
        size = sum(len(b) for b in body)
        append(b"\x1a" + varint(size))
        parts.extend(body)
    return head + b"".join(parts)


# ----------------------------------------------------------------------------- decoders


def _varint_at(data: bytes, i: int) -> tuple:
    """(value, next index) of the varint at data[i]."""
    v = data[i]
    i += 1
    if v < 0x80:
        return v, i
    v &= 0x7F
    shift = 7
    while True:
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def search_columns(data: bytes) -> Optional[tuple]:
    """(id bytes, distance bytes, labels) of a SearchResponse that carries `columns` (the client
    asks for them), or None when the bytes hold anything else (the caller then parses with
    protobuf itself).

    The ids and distances are packed fixed-width fields, so their payloads are the little-endian
    int64 and float32 arrays themselves: one slice each, no per-hit Python work but the labels."""
    n = len(data)
    if n == 0:
        return b"", b"", []
    try:
        if data[0] != 0x12:
            return None
        size, i = _varint_at(data, 1)
        end = i + size
        if end != n:
            return None
        ids, dist, labels = b"", b"", []
        while i < end:
            tag = data[i]
            size = data[i + 1]
            j = i + 2
            if size > 0x7F:
                size, j = _varint_at(data, i + 1)
            i = j + size
            if i > end:
                return None
            if tag == 0x1A:
                labels.append(data[j:i].decode())
            elif tag == 0x0A and not ids:
                ids = data[j:i]
            elif tag == 0x12 and not dist:
                dist = data[j:i]
            else:
                return None
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if len(ids) != 8 * len(labels) or len(dist) != 4 * len(labels):
        return None
    return ids, dist, labels
