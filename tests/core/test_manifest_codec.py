"""Manifest parsing, canonical bytes, swarm ID and signatures; malformed input is always a ManifestError."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_manifest
from quinkgl import keys
from quinkgl.errors import ManifestError
from quinkgl.manifest import Manifest
from quinkgl.manifest.codec import canonical_bytes, manifest_to_dict, parse_manifest, structure_params
from quinkgl.manifest.signing import SignatureStatus, sign_manifest, signature_status
from quinkgl.plugins.manager import build_registry
from quinkgl.plugins.requirements import MANIFEST_COMPONENTS

KEY = keys.generate_private_key()
SIGNED = make_manifest(KEY, expires_at="2099-01-01", bootstrap_peers=("127.0.0.1:7001",), round_limit=10)
VALID = manifest_to_dict(SIGNED)
REGISTRY = build_registry()


def test_round_trip_keeps_swarm_id_and_signature():
    again = parse_manifest(json.dumps(VALID))
    assert again == SIGNED
    assert again.swarm_id == SIGNED.swarm_id
    assert signature_status(again) is SignatureStatus.VALID


def test_canonical_bytes_are_sorted_compact_and_exclude_signature():
    data = canonical_bytes(SIGNED)
    assert b" " not in data.replace(b"demo-5peer", b"")
    obj = json.loads(data)
    assert "signature" not in obj and list(obj) == sorted(obj)
    assert SIGNED.swarm_id.startswith("sha256:") and len(SIGNED.swarm_id) == 71


def test_swarm_id_ignores_formatting():
    pretty = json.dumps(VALID, indent=7)
    assert parse_manifest(pretty).swarm_id == SIGNED.swarm_id


@pytest.mark.parametrize(
    "path,value",
    [
        (("name",), "demo-6peer"),
        (("task", "input_shape"), [1, 28, 29]),
        (("task", "label_type"), "float"),
        (("model", "arch_hash"), "sha256:" + "5" * 64),
        (("aggregation", "name"), "Krum"),
        (("topology", "params"), {"fanout": 3}),
        (("round_limit",), 11),
        (("byzantine_f",), 2),
        (("expires_at",), "2100-01-01"),
        (("bootstrap_peers",), ["127.0.0.1:7002"]),
        (("created_at",), "2020-01-01T00:00:00Z"),
        (("creator_pubkey",), keys.public_key_text(keys.generate_private_key())),
    ],
)
def test_any_changed_value_breaks_the_signature(path, value):
    doc = copy.deepcopy(VALID)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    tampered = parse_manifest(json.dumps(doc))
    assert signature_status(tampered) is SignatureStatus.INVALID
    assert tampered.swarm_id != SIGNED.swarm_id


def test_resigning_with_another_key_is_valid_but_another_creator():
    other = sign_manifest(SIGNED, keys.generate_private_key())
    assert signature_status(other) is SignatureStatus.VALID
    assert other.creator_pubkey != SIGNED.creator_pubkey


def test_half_a_signature_is_invalid_not_unsigned():
    doc = dict(VALID, signature=None)
    assert signature_status(parse_manifest(json.dumps(doc))) is SignatureStatus.INVALID
    doc = dict(VALID, signature=None, creator_pubkey=None)
    assert signature_status(parse_manifest(json.dumps(doc))) is SignatureStatus.UNSIGNED


@pytest.mark.parametrize(
    "mutate,where",
    [
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.pop("task"), "$.task: required field missing"),
        (lambda d: d.update(name=5), "$.name: expected a string"),
        (lambda d: d["task"].update(input_shape=[1, "28"]), "$.task.input_shape"),
        (lambda d: d["task"].update(type="classification"), "$.task.type: must be one of class, regr, seg, det"),
        (lambda d: d.update(round_limit=True), "$.round_limit: expected an integer, got boolean"),
        (lambda d: d.update(byzantine_f=-1), "$.byzantine_f: must be >= 0"),
        (lambda d: d.update(expires_at="31/12/2025"), "$.expires_at"),
        (lambda d: d.update(bootstrap_peers=["nope"]), "$.bootstrap_peers[0]: expected host:port"),
        (lambda d: d["model"].update(arch_hash="md5:abc"), "$.model.arch_hash: must be sha256"),
        (lambda d: d.update(schema_version=2), "$.schema_version"),
    ],
)
def test_malformed_manifests_name_the_field(mutate, where):
    doc = copy.deepcopy(VALID)
    mutate(doc)
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc))
    assert where in str(info.value)


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"a": 1.5}', "floats are not allowed"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100000, "nested too deeply"),
        (b" " * (1024 * 1024 + 1), "limit"),
    ],
)
def test_unreadable_input_is_a_manifest_error(raw, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_bootstrap_peer_forms_are_accepted():
    peer = "12D3KooWGzBvGc3d9e3Tg7qTAv6WYcmPJ1Gyi8hGXfJ3CbNbkNj9"
    forms = [
        "192.168.1.5:7001",
        "localhost:7001",
        "[::1]:7001",
        f"127.0.0.1:7001/p2p/{peer}",
        "/ip4/127.0.0.1/tcp/7001",
        f"/ip4/127.0.0.1/tcp/7001/p2p/{peer}",
        "/dns4/example.org/tcp/7001",
    ]
    manifest = make_manifest(bootstrap_peers=forms)
    assert manifest.bootstrap_peers == tuple(forms)


# ---- property-based: at least 1,000 generated malformed manifests, every one a ManifestError ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


ALL_PATHS = [p for p in _paths(VALID) if p]


@st.composite
def malformed_documents(draw):
    """A valid manifest with one structural mutation, or arbitrary JSON / bytes."""
    kind = draw(st.sampled_from(["replace", "delete", "add", "json", "bytes", "truncate"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "truncate":
        text = json.dumps(VALID).encode()
        return text[: draw(st.integers(0, len(text) - 1))]
    doc = copy.deepcopy(VALID)
    path = draw(st.sampled_from(ALL_PATHS))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if kind == "delete":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)))
    elif kind == "add":
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else doc
        target[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in target))] = draw(json_values)
    else:
        original = parent[path[-1]]
        new = draw(json_values.filter(lambda v: type(v) is not type(original)))
        parent[path[-1]] = new
    return json.dumps(doc, allow_nan=True).encode()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_documents())
def test_generated_malformed_manifests_are_rejected(data):
    # Optional fields may legitimately become null; everything else must be a ManifestError.
    try:
        manifest = parse_manifest(data)
    except ManifestError:
        return
    assert isinstance(manifest, Manifest)
    # Accepted only if the mutation was meaningless (an omitted default) or hit an optional field.
    accepted = manifest_to_dict(manifest)
    changed = {k for k in VALID if accepted[k] != VALID[k]}
    # Component params are free-form in the file and checked against the plugin's params class at resolution.
    for field, kind in MANIFEST_COMPONENTS.items():
        if field in changed and accepted[field]["name"] == VALID[field]["name"]:
            found = REGISTRY.find(kind, accepted[field]["name"])
            if found is not None:
                with pytest.raises(ManifestError):
                    structure_params(accepted[field]["params"], found.spec.params, f"$.{field}.params")
            # (a component that is not installed is refused at resolution: test_plugins covers that)
            changed.discard(field)
    optional = {"plugins", "round_limit", "byzantine_f", "expires_at", "bootstrap_peers", "creator_pubkey", "signature"}
    assert changed <= optional, f"accepted a malformed manifest: {changed}"
    if changed - {"signature"}:
        assert signature_status(manifest) is not SignatureStatus.VALID
