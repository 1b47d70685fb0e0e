"""Tests of the model-update wire codec (quinkgl.wire): round trips, every reject reason, and fuzzing."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import struct
import threading
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import quinkgl.wire as wire
from quinkgl.wire import (
    MAX_HEADER_BYTES,
    DecodedUpdate,
    RejectionCounter,
    RejectReason,
    WireRejected,
    decode_update,
    encode_update,
    max_update_bytes,
    model_spec,
)

SWARM = "sha256:" + "ab" * 32
OTHER_SWARM = "sha256:" + "cd" * 32
SENDER = "12D3KooWQuinkPeerA"
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mnist_mlp() -> nn.Module:
    """The user guide's MNIST MLP."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


MLP_STATE = mnist_mlp().state_dict()
MLP_SPEC = model_spec(MLP_STATE)
MLP_BYTES = encode_update(
    MLP_STATE, swarm_id=SWARM, sender=SENDER, round=7, num_samples=600, metadata={"label_histogram": [60] * 10}
)

# A tiny model keeps property tests fast and makes header bytes a large share of the message.
TINY_STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([0.5, -1.0])}
TINY_SPEC = model_spec(TINY_STATE)
TINY_BYTES = encode_update(TINY_STATE, swarm_id=SWARM, sender=SENDER, round=1, num_samples=3,
                           metadata={"label_histogram": [1, 2]})  # fmt: skip


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def frame(header_fields: dict | bytes, payload: bytes, *, fix_digests: bool = True, version: int = 1) -> bytes:
    """Build a message by hand; with ``fix_digests`` the digest/length fields are made consistent."""
    if isinstance(header_fields, dict):
        fields = dict(header_fields)
        if fix_digests:
            fields.pop("header_sha256", None)
            fields.setdefault("payload_sha256", hashlib.sha256(payload).hexdigest())
            fields.setdefault("payload_length", len(payload))
            fields["header_sha256"] = hashlib.sha256(canonical(fields)).hexdigest()
        header = canonical(fields)
    else:
        header = header_fields
    return b"QGLU" + bytes([version]) + struct.pack(">I", len(header)) + header + payload


def split(data: bytes) -> tuple[dict, bytes]:
    (hlen,) = struct.unpack(">I", data[5:9])
    return json.loads(data[9 : 9 + hlen]), data[9 + hlen :]


def base_fields(**over) -> dict:
    fields = {"swarm_id": SWARM, "sender": SENDER, "round": 1, "num_samples": 3, "metadata": {}}
    fields.update(over)
    return fields


def reason_of(data: bytes, spec=TINY_SPEC, **kw) -> RejectReason:
    with pytest.raises(WireRejected) as info:
        decode_update(data, expected=spec, swarm_id=kw.pop("swarm_id", SWARM), **kw)
    return info.value.reason


# --- round trips -------------------------------------------------------------------------------------------------


def test_mnist_mlp_round_trip_is_bit_identical():
    update = decode_update(MLP_BYTES, expected=MLP_SPEC, swarm_id=SWARM)
    assert isinstance(update, DecodedUpdate)
    assert list(update.tensors) == list(MLP_STATE)
    for name, original in MLP_STATE.items():
        got = update.tensors[name]
        assert got.dtype == original.dtype and got.shape == original.shape
        assert torch.equal(got.view(torch.int32), original.view(torch.int32))  # bit-level equality
    h = update.header
    assert (h.swarm_id, h.sender, h.round, h.num_samples) == (SWARM, SENDER, 7, 600)
    assert h.metadata == {"label_histogram": [60] * 10}
    assert h.payload_length == len(MLP_BYTES) - 9 - struct.unpack(">I", MLP_BYTES[5:9])[0]
    assert h.payload_sha256 == hashlib.sha256(MLP_BYTES[-h.payload_length :]).hexdigest()
    assert len(MLP_BYTES) <= max_update_bytes(MLP_SPEC)
    update.tensors["1.weight"].add_(1.0)  # decoded tensors are writable, independent memory


def test_decoding_copies_the_message_once_into_memory_of_its_own():
    """Decoded tensors never alias the received bytes (a receive buffer may be reused), whatever the message's
    alignment in memory, and a writable buffer decodes like bytes."""
    data = bytearray(b"\0" + MLP_BYTES)  # one byte in: every tensor's bytes sit at an odd address
    update = decode_update(memoryview(data)[1:], expected=MLP_SPEC, swarm_id=SWARM)
    data[:] = bytes(len(data))
    for name, original in MLP_STATE.items():
        got = update.tensors[name]
        assert torch.equal(got, original) and got.data_ptr() % 16 == 0


def test_round_trip_of_other_dtypes_scalars_and_empty_tensors():
    state = {
        "f16": torch.randn(3, 2).half(),
        "bf16": torch.randn(4).bfloat16(),
        "f64": torch.randn(2, 2, 2, dtype=torch.float64),
        "count": torch.tensor(12, dtype=torch.int64),  # like BatchNorm's num_batches_tracked
        "mask": torch.tensor([True, False, True]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
    }
    spec = model_spec(state)
    assert spec["count"] == ((), "int64") and spec["empty"] == ((0, 3), "float32")
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=0)
    update = decode_update(data, expected=spec, swarm_id=SWARM)
    for name, t in state.items():
        assert update.tensors[name].dtype == t.dtype and torch.equal(update.tensors[name], t)
    assert update.header.metadata == {}


def test_encode_detaches_makes_contiguous_and_handles_tied_weights():
    w = torch.randn(4, 3, requires_grad=True)
    state = {"w": w, "wt": w.t(), "tied": w}  # a transposed view and a second name for the same storage
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=1)
    update = decode_update(data, expected=model_spec(state), swarm_id=SWARM)
    assert torch.equal(update.tensors["wt"], w.detach().t()) and torch.equal(update.tensors["tied"], w.detach())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"swarm_id": "sha256:XYZ"},
        {"sender": ""},
        {"sender": "a b"},
        {"round": -1},
        {"round": True},
        {"num_samples": 1.5},
        {"metadata": {"x": float("nan")}},
        {"metadata": {1: "non-string key"}},
        {"metadata": {"big": "x" * MAX_HEADER_BYTES}},
    ],
)
def test_encode_refuses_bad_arguments(kwargs):
    args = {"swarm_id": SWARM, "sender": SENDER, "round": 0, "num_samples": 0} | kwargs
    with pytest.raises(ValueError):
        encode_update(TINY_STATE, **args)


def test_model_spec_refuses_dtypes_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="complex128"):
        model_spec({"z": torch.zeros(2, dtype=torch.complex128)})


# --- one test per reject reason ----------------------------------------------------------------------------------


def test_oversized_is_checked_before_parsing():
    cap = max_update_bytes(TINY_SPEC)
    with mock.patch.object(wire, "_parse_header", side_effect=AssertionError("parsed")):
        assert reason_of(b"\0" * (cap + 1)) is RejectReason.OVERSIZED
        assert reason_of(TINY_BYTES, max_bytes=len(TINY_BYTES) - 1) is RejectReason.OVERSIZED
    # The MLP's own update is far over the tiny model's cap.
    assert reason_of(MLP_BYTES) is RejectReason.OVERSIZED


def test_truncated():
    assert reason_of(TINY_BYTES[:-1]) is RejectReason.TRUNCATED
    assert reason_of(TINY_BYTES[:20]) is RejectReason.TRUNCATED  # inside the header
    assert reason_of(b"") is RejectReason.TRUNCATED


def test_trailing_bytes():
    assert reason_of(TINY_BYTES + b"\0") is RejectReason.TRAILING_BYTES


def test_bad_magic():
    assert reason_of(b"QGLV" + TINY_BYTES[4:]) is RejectReason.BAD_MAGIC
    assert reason_of(b"PK\x03") is RejectReason.BAD_MAGIC


def test_bad_version():
    assert reason_of(TINY_BYTES[:4] + b"\x02" + TINY_BYTES[5:]) is RejectReason.BAD_VERSION


_, TINY_PAYLOAD = split(TINY_BYTES)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1,2]", id="not-object"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
        pytest.param(base_fields(metadata=[1]), id="metadata-not-object"),
        pytest.param(base_fields(round=-1), id="negative-round"),
        pytest.param(base_fields(round=True), id="bool-round"),
        pytest.param(base_fields(num_samples=2.0), id="float-samples"),
        pytest.param(base_fields(sender=""), id="empty-sender"),
        pytest.param(base_fields(sender="peer\n[aggregated] forged"), id="sender-with-newline"),
        pytest.param(base_fields(swarm_id="sha256:" + "AB" * 32), id="uppercase-swarm"),
        pytest.param(base_fields(extra=1), id="extra-field"),
        pytest.param({k: v for k, v in base_fields().items() if k != "sender"}, id="missing-field"),
        pytest.param(base_fields(payload_sha256="00"), id="short-digest"),
    ],
)
def test_bad_header(header):
    assert reason_of(frame(header, TINY_PAYLOAD)) is RejectReason.BAD_HEADER


def test_bad_header_non_canonical_duplicate_and_overlong():
    fields, payload = split(TINY_BYTES)
    spaced = json.dumps(fields, sort_keys=True).encode()  # valid JSON, same content, not canonical
    assert reason_of(frame(spaced, payload)) is RejectReason.BAD_HEADER
    dup = canonical(fields)[:-1] + b',"round":1}'
    assert reason_of(frame(dup, payload)) is RejectReason.BAD_HEADER
    nan = canonical(fields).replace(b'"metadata":{', b'"metadata":{"x":NaN,')
    assert reason_of(frame(nan, payload)) is RejectReason.BAD_HEADER
    long = TINY_BYTES[:5] + struct.pack(">I", MAX_HEADER_BYTES + 1) + TINY_BYTES[9:]
    assert reason_of(long) is RejectReason.BAD_HEADER
    assert reason_of(TINY_BYTES[:5] + b"\0\0\0\0" + TINY_BYTES[9:]) is RejectReason.BAD_HEADER


def test_wrong_swarm():
    assert reason_of(TINY_BYTES, swarm_id=OTHER_SWARM) is RejectReason.WRONG_SWARM


def test_digest_mismatch_payload_and_header():
    corrupted = bytearray(TINY_BYTES)
    corrupted[-1] ^= 0x01  # last byte of tensor data
    assert reason_of(bytes(corrupted)) is RejectReason.DIGEST_MISMATCH
    fields, payload = split(TINY_BYTES)
    fields["round"] = 2  # a canonical, well-formed header whose header_sha256 is stale
    assert reason_of(frame(fields, payload, fix_digests=False)) is RejectReason.DIGEST_MISMATCH


def st_payload(entries: dict, data: bytes = b"") -> bytes:
    """A hand-made safetensors payload (header JSON + data) so the parser sees exactly what we want."""
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01\x02\x03", id="shorter-than-prefix"),
        pytest.param(struct.pack("<Q", 2**63) + b"{}", id="huge-header-length"),
        pytest.param(struct.pack("<Q", 4) + b"nope", id="header-not-json"),
        pytest.param(st_payload([]), id="header-not-object"),
        pytest.param(
            st_payload({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "b": "x"}, bytes(24)),
            id="entry-not-object",
        ),
        pytest.param(
            st_payload(
                {
                    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 2**62]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [2**62, 2**62 + 8]},
                },
                bytes(32),
            ),
            id="huge-offsets",
        ),
        pytest.param(
            st_payload(
                {
                    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                },
                bytes(32),
            ),
            id="overlapping-offsets",
        ),
        pytest.param(
            st_payload(
                {
                    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},
                },
                bytes(40),
            ),
            id="unused-data-at-end",
        ),
        pytest.param(
            st_payload(
                {
                    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [28, 36]},
                },
                bytes(36),
            ),
            id="gap-between-tensors",
        ),
    ],
)
def test_bad_payload(payload):
    assert reason_of(frame(base_fields(), payload)) is RejectReason.BAD_PAYLOAD


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"w": ((2, 3), "float32")}, id="extra-tensor"),
        pytest.param({**TINY_SPEC, "c": ((1,), "float32")}, id="missing-tensor"),
        pytest.param({"w": ((2, 3), "float32"), "bias": ((2,), "float32")}, id="renamed"),
        pytest.param({"w": ((3, 2), "float32"), "b": ((2,), "float32")}, id="wrong-shape"),
        pytest.param({"w": ((6,), "float32"), "b": ((2,), "float32")}, id="same-numel-other-rank"),
        pytest.param({"w": ((2, 3), "float64"), "b": ((2,), "float32")}, id="wrong-dtype"),
        pytest.param({"w": ((2, 3), "float32"), "b": ((2,), "bfloat16")}, id="wrong-dtype-same-size"),
    ],
)
def test_shape_mismatch(spec):
    assert reason_of(TINY_BYTES, spec=spec, max_bytes=10**6) is RejectReason.SHAPE_MISMATCH


def test_shape_mismatch_for_unknown_dtype_code():
    payload = st_payload({"w": {"dtype": "Q99", "shape": [2, 3], "data_offsets": [0, 24]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}, bytes(32))  # fmt: skip
    assert reason_of(frame(base_fields(), payload)) is RejectReason.SHAPE_MISMATCH


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_non_finite(bad, dtype):
    state = {"w": torch.zeros(2, 3, dtype=dtype), "n": torch.tensor(3)}
    state["w"][1, 2] = bad
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=1)
    assert reason_of(data, spec=model_spec(state)) is RejectReason.NON_FINITE


@pytest.mark.parametrize(
    "huge", [torch.full((4,), 60000.0, dtype=torch.float16), torch.tensor([3e38, 3e38, -3e38, 3e38])], ids=str
)
def test_finite_tensors_whose_sum_overflows_are_accepted(huge):
    """The NaN/Inf check sums each tensor first; a sum that overflows on finite values is not a rejection."""
    assert not torch.isfinite(huge.sum())
    state = {"w": huge}
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=1)
    assert torch.equal(decode_update(data, expected=model_spec(state), swarm_id=SWARM).tensors["w"], huge)


def test_non_finite_in_float8():
    state = {"w": torch.tensor([0.5, float("nan")]).to(torch.float8_e4m3fn)}
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=1)
    assert reason_of(data, spec=model_spec(state)) is RejectReason.NON_FINITE
    state = {"w": torch.tensor([0.5, 1.0]).to(torch.float8_e4m3fn)}
    data = encode_update(state, swarm_id=SWARM, sender=SENDER, round=0, num_samples=1)
    assert decode_update(data, expected=model_spec(state), swarm_id=SWARM).tensors["w"].dtype == torch.float8_e4m3fn


# --- property tests ----------------------------------------------------------------------------------------------


def assert_rejected_or_valid(data: bytes, spec=TINY_SPEC) -> None:
    """Decoding may only raise WireRejected, or return tensors that match the spec and are finite."""
    try:
        update = decode_update(data, expected=spec, swarm_id=SWARM)
    except WireRejected:
        return
    assert {k: (tuple(t.shape), str(t.dtype)[6:]) for k, t in update.tensors.items()} == spec
    assert all(torch.isfinite(t).all() for t in update.tensors.values() if t.is_floating_point())


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_rejected(data):
    with pytest.raises(WireRejected):
        decode_update(data, expected=TINY_SPEC, swarm_id=SWARM)


@FUZZ
@given(st.integers(0, MAX_HEADER_BYTES + 10), st.binary(max_size=1024))
def test_random_bytes_behind_a_valid_prefix_are_rejected(header_len, rest):
    data = b"QGLU\x01" + struct.pack(">I", header_len) + rest
    with pytest.raises(WireRejected):
        decode_update(data, expected=TINY_SPEC, swarm_id=SWARM)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(st.dictionaries(st.sampled_from([*sorted(base_fields()), "extra"]), json_values, max_size=7), st.booleans())
def test_random_json_headers_are_rejected(fields, fix_digests):
    with pytest.raises(WireRejected):
        decode_update(frame(fields, TINY_PAYLOAD, fix_digests=fix_digests), expected=TINY_SPEC, swarm_id=SWARM)


@FUZZ
@given(st.binary(max_size=512) | st.builds(lambda n, b: struct.pack("<Q", n) + b, st.integers(0, 2**64 - 1),
                                             st.binary(max_size=256)))  # fmt: skip
def test_random_payload_with_valid_digest_is_rejected(payload):
    # The digest check cannot protect against a malicious sender: the safetensors defences must hold alone.
    with pytest.raises(WireRejected):
        decode_update(frame(base_fields(), payload), expected=TINY_SPEC, swarm_id=SWARM)


@FUZZ
@given(st.data())
def test_mutated_payload_with_valid_digest_is_rejected_or_well_formed(data):
    payload = bytearray(TINY_PAYLOAD)
    for _ in range(data.draw(st.integers(1, 4))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    assert_rejected_or_valid(frame(base_fields(), bytes(payload)))


@FUZZ
@given(st.sampled_from(["tiny", "mlp"]), st.data())
def test_every_truncation_is_rejected(which, data):
    full, spec = (TINY_BYTES, TINY_SPEC) if which == "tiny" else (MLP_BYTES, MLP_SPEC)
    cut = data.draw(st.integers(0, len(full) - 1))
    assert reason_of(full[:cut], spec=spec) is RejectReason.TRUNCATED


def test_every_truncation_of_the_tiny_encoding_exhaustively():
    for cut in range(len(TINY_BYTES)):
        assert reason_of(TINY_BYTES[:cut]) is RejectReason.TRUNCATED, cut


@FUZZ
@given(st.data())
def test_single_byte_corruption_is_always_rejected(data):
    # Bias positions towards the prefix and header: the payload is covered by its digest anyway.
    header_end = 9 + struct.unpack(">I", TINY_BYTES[5:9])[0]
    pos = data.draw(st.integers(0, header_end + 8) | st.integers(0, len(TINY_BYTES) - 1))
    corrupted = bytearray(TINY_BYTES)
    corrupted[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(WireRejected):
        decode_update(bytes(corrupted), expected=TINY_SPEC, swarm_id=SWARM)


def test_every_single_bit_flip_of_the_tiny_encoding_is_rejected():
    for pos in range(len(TINY_BYTES)):
        for bit in range(8):
            corrupted = bytearray(TINY_BYTES)
            corrupted[pos] ^= 1 << bit
            with pytest.raises(WireRejected):
                decode_update(bytes(corrupted), expected=TINY_SPEC, swarm_id=SWARM)


@FUZZ
@given(st.binary(max_size=64), st.integers(1, 4096), st.sampled_from([None, 100, 5000]))
def test_oversized_input_is_rejected_without_parsing(head, extra, max_bytes):
    cap = max_update_bytes(TINY_SPEC) if max_bytes is None else max_bytes
    data = (TINY_BYTES[:9] + head + bytes(cap))[: cap + extra]
    with (
        mock.patch.object(wire, "_parse_header", side_effect=AssertionError("parsed")),
        mock.patch.object(wire.hashlib, "sha256", side_effect=AssertionError("hashed")),
    ):
        assert reason_of(data, max_bytes=max_bytes) is RejectReason.OVERSIZED


DTYPES = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"]
names = st.text("abcxyz._0123", min_size=1, max_size=6)
tensor_specs = st.tuples(st.lists(st.integers(0, 4), max_size=3).map(tuple), st.sampled_from(DTYPES))
model_specs = st.dictionaries(names, tensor_specs, min_size=1, max_size=4)


def tensors_for(spec) -> dict[str, torch.Tensor]:
    return {n: torch.zeros(shape, dtype=getattr(torch, dt)) for n, (shape, dt) in spec.items()}


@FUZZ
@given(model_specs, st.data())
def test_mismatched_models_are_shape_mismatch(spec, data):
    other = dict(spec)
    name = data.draw(st.sampled_from(sorted(spec)))
    kind = data.draw(st.sampled_from(["rename", "reshape", "retype", "add", "drop", "random"]))
    if kind == "rename":
        other[name + "_"] = other.pop(name)
    elif kind == "reshape":
        other[name] = (data.draw(tensor_specs.map(lambda s: s[0]).filter(lambda s: s != spec[name][0])), spec[name][1])
    elif kind == "retype":
        other[name] = (spec[name][0], data.draw(st.sampled_from([d for d in DTYPES if d != spec[name][1]])))
    elif kind == "add":
        other[name + "!"] = data.draw(tensor_specs)
    elif kind == "drop":
        other.pop(name)
    else:
        other = data.draw(model_specs.filter(lambda s: s != spec))
    encoded = encode_update(tensors_for(other), swarm_id=SWARM, sender=SENDER, round=0, num_samples=0)
    assert reason_of(encoded, spec=spec, max_bytes=10**6) is RejectReason.SHAPE_MISMATCH
    # With the default cap a bigger foreign model may be stopped earlier; it is rejected either way.
    assert reason_of(encoded, spec=spec) in {RejectReason.SHAPE_MISMATCH, RejectReason.OVERSIZED}


@FUZZ
@given(model_specs)
def test_random_models_round_trip(spec):
    tensors = tensors_for(spec)
    update = decode_update(encode_update(tensors, swarm_id=SWARM, sender=SENDER, round=0, num_samples=0),
                           expected=model_spec(tensors), swarm_id=SWARM)  # fmt: skip
    assert all(torch.equal(update.tensors[n], t) for n, t in tensors.items())


# --- counter and hygiene -----------------------------------------------------------------------------------------


def test_rejection_counter_is_thread_safe():
    counter = RejectionCounter()

    def work():
        for i in range(2000):
            counter.record(RejectReason.OVERSIZED if i % 2 else RejectReason.NON_FINITE)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.as_dict() == {"oversized": 4000, "non_finite": 4000}
    assert counter.total == 8000


def test_wire_never_uses_pickle_or_torch_load():
    source = Path(wire.__file__).read_text()
    assert "pickle" not in source.lower()
    # safetensors.torch.load (bytes in, tensors out, no unpickling) is the one allowed "...torch.load".
    assert not re.search(r"(?<!safetensors\.)torch\.load", source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(m.split(".")[0] in {"pickle", "dill", "marshal", "shelve", "joblib"} for m in mods)


def test_counts_too_large_for_float_weights_are_rejected():
    # A hostile peer claiming 10**400 samples would make float() in aggregation overflow: refuse it at the door.
    payload = split(TINY_BYTES)[1]
    assert reason_of(frame(base_fields(num_samples=10**400), payload)) is RejectReason.BAD_HEADER
    assert reason_of(frame(base_fields(metadata={"label_histogram": [1, 10**30]}), payload)) is RejectReason.BAD_HEADER
    ok = decode_update(frame(base_fields(num_samples=2**53), payload), expected=TINY_SPEC, swarm_id=SWARM)
    assert ok.header.num_samples == 2**53
