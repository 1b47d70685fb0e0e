"""The wire codec for model updates: what one peer sends another after a round.

No Python objects are ever deserialised: weights travel as safetensors bytes, and everything else is strict JSON.

Format, version 1 (all integers big-endian unless noted)::

    offset  size  field
    0       4     magic  b"QGLU"
    4       1     version  (1)
    5       4     header length H  (1 <= H <= MAX_HEADER_BYTES = 16 KiB)
    9       H     header: UTF-8 JSON object, canonical form (sorted keys, no whitespace, ASCII only)
    9+H     P     payload: safetensors bytes of the tensors (its own 8-byte little-endian header length first)

The message ends exactly at ``9 + H + P``; trailing bytes are rejected. Header fields, all required, no others:

* ``swarm_id``: ``"sha256:<64 lowercase hex>"``; must equal the receiver's swarm.
* ``sender``: the sender's peer ID (1..256 printable ASCII characters, no spaces).
* ``round``, ``num_samples``: ints >= 0 (JSON booleans are not ints here).
* ``payload_length`` (= P) and ``payload_sha256`` (lowercase hex SHA-256 of the payload bytes).
* ``metadata``: a JSON object of what the data policy lets travel, e.g. ``{"label_histogram": [..]}``.
* ``header_sha256``: SHA-256 of the canonical JSON of all the other header fields.

``header_sha256`` exists because the payload digest does not cover the header: without it a corrupted digit in
``round`` or ``num_samples`` would decode as a valid, different update. It detects corruption, not forgery;
authenticity comes from the transport (Noise sessions bound to peer IDs). The canonical-form requirement makes
the encoding of a header unique, so no byte of a valid message can change without the message being rejected.

Decoding is defensive and bounded: the size cap (derived from the local model) is checked before anything is
parsed, the payload digest before the payload is parsed, and the safetensors header is checked against the
local model's names/shapes/dtypes (and its offsets against the payload, as safetensors itself requires: the
tensors cover the data section end to end, in order, without gaps or overlaps) before any tensor is built.

Decoding copies the message once: each tensor gets its own freshly allocated (aligned) memory, filled straight
from the received bytes. The payload is neither sliced into a new ``bytes`` nor parsed by a second library, so a
receiver holds at most the message and the decoded model at once (about 2x the model size).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import struct
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import numpy
import safetensors.torch
import torch

MAGIC = b"QGLU"
VERSION = 1
MAX_HEADER_BYTES = 16 * 1024
MAX_SENDER_CHARS = 256
_PREFIX = struct.Struct(">4sBI")  # magic, version, header length
_SLACK_BYTES = 4096

_SWARM_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}\Z")
# Peer IDs are base58 in practice; printable ASCII without spaces keeps a hostile sender out of our log lines.
_SENDER_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_SENDER_CHARS}}}\Z")
_HEADER_FIELDS = frozenset(
    {"swarm_id", "sender", "round", "num_samples", "payload_sha256", "payload_length", "metadata", "header_sha256"}
)

# safetensors dtype codes -> torch dtype names. Our own table (not safetensors' private one) so that a spec's
# dtype strings are stable, readable names; dtypes this torch build lacks are dropped.
_ST_CODES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
}  # fmt: skip
_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in _ST_CODES.values() if hasattr(torch, name)}

TensorSpec = tuple[tuple[int, ...], str]
"""(shape, dtype name) of one tensor, e.g. ``((128, 784), "float32")``."""


class RejectReason(str, enum.Enum):
    """Why an inbound update was rejected; the value is the stable name used in counters and logs."""

    OVERSIZED = "oversized"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_HEADER = "bad_header"
    WRONG_SWARM = "wrong_swarm"
    DIGEST_MISMATCH = "digest_mismatch"
    BAD_PAYLOAD = "bad_payload"
    SHAPE_MISMATCH = "shape_mismatch"
    NON_FINITE = "non_finite"


class WireRejected(Exception):
    """An inbound update failed a check; ``reason`` says which, ``detail`` explains it for logs."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"update rejected ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail


@attrs.frozen
class UpdateHeader:
    """The decoded JSON header of an update (``header_sha256`` is checked and dropped)."""

    swarm_id: str
    sender: str
    round: int
    num_samples: int
    payload_sha256: str
    payload_length: int
    metadata: dict[str, Any]


@attrs.frozen
class DecodedUpdate:
    """A verified update: its header and tensors matching the local model's spec."""

    header: UpdateHeader
    tensors: dict[str, torch.Tensor]


class RejectionCounter:
    """Thread-safe counts of rejected updates per reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[RejectReason, int] = {}

    def record(self, reason: RejectReason) -> None:
        """Count one rejection for ``reason``."""
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def as_dict(self) -> dict[str, int]:
        """Snapshot of the non-zero counts, keyed by the reason's value."""
        with self._lock:
            return {r.value: n for r, n in self._counts.items()}

    @property
    def total(self) -> int:
        """Total number of rejections recorded."""
        with self._lock:
            return sum(self._counts.values())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def model_spec(state_dict: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """Expected names, shapes and dtypes of a local model's tensors (e.g. ``model.state_dict()``)."""
    spec: dict[str, TensorSpec] = {}
    for name, t in state_dict.items():
        dname = _dtype_name(t.dtype)
        if dname not in _DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {dname}, which the wire format cannot carry")
        spec[name] = (tuple(int(d) for d in t.shape), dname)
    return spec


def max_update_bytes(spec: Mapping[str, TensorSpec]) -> int:
    """Hard cap on the size of an encoded update for a model with this spec."""
    tensor_bytes = sum(math.prod(shape) * _DTYPES[dt].itemsize for shape, dt in spec.values())
    # Generous per-tensor bound on safetensors' JSON entry: name (escaped), dtype, shape and two offsets.
    st_header = 8 + 2 + sum(6 * len(name) + 21 * len(shape) + 128 for name, (shape, _) in spec.items()) + 8
    return _PREFIX.size + MAX_HEADER_BYTES + st_header + tensor_bytes + _SLACK_BYTES


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


MAX_JSON_INT = 2**53  # beyond this, float() in aggregation loses precision or overflows


def _is_nonneg_int(v: Any) -> bool:
    # bool is an int subclass; a JSON true is not a round number. Huge counts would overflow float weights.
    return type(v) is int and 0 <= v <= MAX_JSON_INT


def _ints_bounded(value: Any) -> bool:
    if type(value) is int:
        return abs(value) <= MAX_JSON_INT
    if isinstance(value, dict):
        return all(_ints_bounded(v) for v in value.values())
    if isinstance(value, list):
        return all(_ints_bounded(v) for v in value)
    return True


def encode_update(
    tensors: Mapping[str, torch.Tensor],
    *,
    swarm_id: str,
    sender: str,
    round: int,
    num_samples: int,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """Encode tensors and header fields as one wire message (see the module docstring)."""
    if not isinstance(swarm_id, str) or not _SWARM_RE.match(swarm_id):
        raise ValueError(f"swarm_id must be 'sha256:<64 lowercase hex>', got {swarm_id!r}")
    if not isinstance(sender, str) or not _SENDER_RE.match(sender):
        raise ValueError(f"sender must be a peer ID of 1..{MAX_SENDER_CHARS} printable ASCII characters")
    if not (_is_nonneg_int(round) and _is_nonneg_int(num_samples)):
        raise ValueError("round and num_samples must be ints >= 0")
    meta = dict(metadata or {})
    if not all(isinstance(k, str) for k in meta):
        raise ValueError("metadata keys must be strings")
    prepared: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing storage (tied weights); each name gets its own copy on the wire.
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        prepared[name] = t
    payload = safetensors.torch.save(prepared)
    fields: dict[str, Any] = {
        "swarm_id": swarm_id,
        "sender": sender,
        "round": round,
        "num_samples": num_samples,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_length": len(payload),
        "metadata": meta,
    }
    try:
        fields["header_sha256"] = hashlib.sha256(_canonical_json(fields)).hexdigest()
        header = _canonical_json(fields)
    except ValueError as e:  # NaN/Inf floats in metadata, or a circular structure
        raise ValueError(f"metadata is not plain JSON: {e}") from None
    if json.loads(header) != fields:
        raise ValueError("metadata does not survive a JSON round trip (tuples, non-string keys, ...)")
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(header)} bytes, over the {MAX_HEADER_BYTES}-byte limit (metadata too big)")
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + payload


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_header(raw: bytes) -> UpdateHeader:
    bad = RejectReason.BAD_HEADER
    try:
        fields = json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_pairs, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireRejected(bad, f"header is not valid JSON: {e}") from None
    if not isinstance(fields, dict):
        raise WireRejected(bad, "header is not a JSON object")
    if fields.keys() != _HEADER_FIELDS:
        missing, extra = sorted(_HEADER_FIELDS - fields.keys()), sorted(fields.keys() - _HEADER_FIELDS)
        raise WireRejected(bad, f"header fields differ: missing {missing}, extra {extra}")
    if not (isinstance(fields["swarm_id"], str) and _SWARM_RE.match(fields["swarm_id"])):
        raise WireRejected(bad, "swarm_id is not 'sha256:<64 hex>'")
    if not (isinstance(fields["sender"], str) and _SENDER_RE.match(fields["sender"])):
        raise WireRejected(bad, "sender is not a peer ID string")
    for key in ("round", "num_samples", "payload_length"):
        if not _is_nonneg_int(fields[key]):
            raise WireRejected(bad, f"{key} is not an int >= 0")
    for key in ("payload_sha256", "header_sha256"):
        if not (isinstance(fields[key], str) and _HEX64_RE.match(fields[key])):
            raise WireRejected(bad, f"{key} is not 64 lowercase hex digits")
    if not isinstance(fields["metadata"], dict):
        raise WireRejected(bad, "metadata is not a JSON object")
    if not _ints_bounded(fields["metadata"]):
        raise WireRejected(bad, "metadata holds an integer beyond ±2^53")
    try:
        canonical = _canonical_json(fields)
    except (ValueError, RecursionError) as e:
        raise WireRejected(bad, f"header cannot be re-encoded: {e}") from None
    # Canonical form makes each header's bytes unique, so the digest below covers every byte of the header.
    if canonical != raw:
        raise WireRejected(bad, "header is not in canonical JSON form")
    claimed = fields.pop("header_sha256")
    if hashlib.sha256(_canonical_json(fields)).hexdigest() != claimed:
        raise WireRejected(RejectReason.DIGEST_MISMATCH, "header_sha256 does not match the header")
    return UpdateHeader(**fields)


_Layout = list[tuple[str, torch.dtype, tuple[int, ...], int, int]]  # name, dtype, shape, start, stop (in payload)


def _check_payload_layout(payload: memoryview, expected: Mapping[str, TensorSpec]) -> _Layout:
    """Validate the safetensors header against ``expected`` before anything is allocated; return where each
    tensor's bytes are in ``payload``, in payload order."""
    bad = RejectReason.BAD_PAYLOAD
    if len(payload) < 8:
        raise WireRejected(bad, "payload shorter than the safetensors length prefix")
    (n,) = struct.unpack_from("<Q", payload)
    if n > len(payload) - 8:
        raise WireRejected(bad, f"safetensors header declares {n} bytes, more than the payload holds")
    try:
        entries = json.loads(bytes(payload[8 : 8 + n]).decode("utf-8"), object_pairs_hook=_strict_pairs,
                             parse_constant=_no_constants)  # fmt: skip
    except (ValueError, RecursionError) as e:
        raise WireRejected(bad, f"safetensors header is not valid JSON: {e}") from None
    if not isinstance(entries, dict):
        raise WireRejected(bad, "safetensors header is not a JSON object")
    entries.pop("__metadata__", None)  # free-form string metadata; ours carries none, and it sizes nothing
    data_len = len(payload) - 8 - n
    layout: _Layout = []
    if entries.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - entries.keys()), sorted(entries.keys() - expected.keys())
        detail = f"tensor names differ: missing {missing[:5]}, extra {extra[:5]}"
        raise WireRejected(RejectReason.SHAPE_MISMATCH, detail)
    for name, entry in entries.items():
        if not (isinstance(entry, dict) and entry.keys() == {"dtype", "shape", "data_offsets"}):
            raise WireRejected(bad, f"safetensors entry {name!r} is malformed")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(_is_nonneg_int(d) for d in shape)):
            raise WireRejected(bad, f"safetensors entry {name!r} has a malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_nonneg_int(o) for o in offsets)):
            raise WireRejected(bad, f"safetensors entry {name!r} has malformed offsets")
        want_shape, want_dtype = expected[name]
        got_dtype = _ST_CODES.get(dtype, str(dtype)) if isinstance(dtype, str) else repr(dtype)
        if tuple(shape) != tuple(want_shape) or got_dtype != want_dtype:
            raise WireRejected(
                RejectReason.SHAPE_MISMATCH,
                f"tensor {name!r} is {got_dtype}{list(shape)}, expected {want_dtype}{list(want_shape)}",
            )
        start, stop = offsets
        if stop - start != math.prod(shape) * _DTYPES[want_dtype].itemsize or stop > data_len:
            raise WireRejected(bad, f"safetensors entry {name!r} has offsets that do not fit its shape or the payload")
        layout.append((name, _DTYPES[want_dtype], tuple(want_shape), 8 + n + start, 8 + n + stop))
    layout.sort(key=lambda entry: (entry[3], entry[4]))
    end = 8 + n
    for name, _, _, start, stop in layout:  # safetensors' own rule: end to end, in order, no gap, no overlap
        if start != end:
            raise WireRejected(bad, f"safetensors entry {name!r} does not start where the previous tensor ends")
        end = stop
    if end != len(payload):
        raise WireRejected(bad, "safetensors tensors do not cover the payload's data section")
    return layout


def _materialize(payload: memoryview, layout: _Layout) -> dict[str, torch.Tensor]:
    """Each tensor in its own new memory, filled from ``payload`` in one copy (the payload is not kept)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, dtype, shape, start, stop in layout:
        raw = torch.empty(stop - start, dtype=torch.uint8)  # fresh and aligned, whatever the offset was
        if stop > start:
            raw.numpy()[:] = numpy.frombuffer(payload, dtype=numpy.uint8, count=stop - start, offset=start)
        tensors[name] = raw.view(dtype).reshape(shape)  # safetensors is little-endian, like every torch wheel host
    return tensors


def _check_finite(tensors: Mapping[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if t.dtype.itemsize == 1:  # torch lacks isfinite for some float8 formats
            t = t.float()
        # One pass without a temporary: a NaN or an infinity anywhere makes the sum NaN or infinite (20x faster
        # than isfinite(t).all() on 50 MB). A non-finite sum may also be an overflow of huge finite values, so
        # only then is every element checked.
        if bool(torch.isfinite(t.sum())):
            continue
        if not bool(torch.isfinite(t).all()):
            raise WireRejected(RejectReason.NON_FINITE, f"tensor {name!r} contains NaN or Inf")


def decode_update(
    data: bytes,
    *,
    expected: Mapping[str, TensorSpec],
    swarm_id: str,
    max_bytes: int | None = None,
) -> DecodedUpdate:
    """Verify and decode one wire message; raise :class:`WireRejected` if any check fails."""
    cap = max_update_bytes(expected) if max_bytes is None else max_bytes
    if len(data) > cap:
        raise WireRejected(RejectReason.OVERSIZED, f"{len(data)} bytes, cap is {cap}")
    if len(data) < _PREFIX.size:
        # A short prefix of a real message is a truncation; anything else is simply not ours.
        if data[:5] == (MAGIC + bytes([VERSION]))[: len(data)]:
            raise WireRejected(RejectReason.TRUNCATED, f"only {len(data)} bytes")
        raise WireRejected(RejectReason.BAD_MAGIC, "not a QuinkGL update")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise WireRejected(RejectReason.BAD_MAGIC, "not a QuinkGL update")
    if version != VERSION:
        raise WireRejected(RejectReason.BAD_VERSION, f"version {version}, this codec reads {VERSION}")
    if not 0 < header_len <= MAX_HEADER_BYTES:
        raise WireRejected(RejectReason.BAD_HEADER, f"header length {header_len} outside 1..{MAX_HEADER_BYTES}")
    body = _PREFIX.size + header_len
    if len(data) < body:
        raise WireRejected(RejectReason.TRUNCATED, f"header declares {header_len} bytes, message ends before")
    header = _parse_header(bytes(data[_PREFIX.size : body]))
    have = len(data) - body
    if have < header.payload_length:
        raise WireRejected(RejectReason.TRUNCATED, f"payload declares {header.payload_length} bytes, got {have}")
    if have > header.payload_length:
        raise WireRejected(RejectReason.TRAILING_BYTES, f"{have - header.payload_length} bytes after the payload")
    if header.swarm_id != swarm_id:
        raise WireRejected(RejectReason.WRONG_SWARM, f"update for {header.swarm_id}, this peer is in {swarm_id}")
    payload = memoryview(data)[body:]  # a view, not a copy
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise WireRejected(RejectReason.DIGEST_MISMATCH, "payload_sha256 does not match the payload")
    loaded = _materialize(payload, _check_payload_layout(payload, expected))
    tensors = {name: loaded[name] for name in expected}
    _check_finite(tensors)
    return DecodedUpdate(header=header, tensors=tensors)
