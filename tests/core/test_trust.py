"""Trust policies open / tofu / pinned, expiry, and the TOFU store (keyed by manifest name)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os

import pytest

from helpers import make_manifest
from quinkgl import keys
from quinkgl.errors import ExpiredError, SignatureError, TrustError
from quinkgl.manifest.codec import manifest_to_dict, parse_manifest
from quinkgl.manifest.signing import SignatureStatus
from quinkgl.trust import TofuStore, TrustPolicy, evaluate_trust, verify_manifest

CREATOR = keys.generate_private_key()
IMPOSTOR = keys.generate_private_key()
CREATOR_PUB = keys.public_key_text(CREATOR)


def tampered(manifest):
    doc = manifest_to_dict(manifest)
    doc["round_limit"] = 999
    return parse_manifest(json.dumps(doc))


@pytest.fixture
def store(tmp_path):
    return TofuStore(str(tmp_path / "tofu.json"))


def test_open_accepts_everything_with_warnings():
    unsigned = make_manifest()
    decision = evaluate_trust(unsigned, "open")
    assert decision.signature is SignatureStatus.UNSIGNED and decision.warnings
    decision = evaluate_trust(tampered(make_manifest(CREATOR)), TrustPolicy.OPEN)
    assert decision.signature is SignatureStatus.INVALID and "INVALID" in decision.warnings[0]


def test_tofu_remembers_the_first_creator_by_name_and_rejects_another(store):
    first = evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=store)
    assert first.first_seen and store.lookup("demo-5peer") == CREATOR_PUB
    again = evaluate_trust(make_manifest(CREATOR, round_limit=5), "tofu", tofu_store=store)  # new swarm, same creator
    assert not again.first_seen
    with pytest.raises(TrustError, match=r"TOFU conflict.*first seen signed by"):
        evaluate_trust(make_manifest(IMPOSTOR), "tofu", tofu_store=store)
    with pytest.raises(TrustError, match="unsigned"):
        evaluate_trust(make_manifest(), "tofu", tofu_store=store)
    other_name = evaluate_trust(make_manifest(IMPOSTOR, name="other"), "tofu", tofu_store=store)
    assert other_name.first_seen


def test_tofu_store_location_is_per_user_and_overridable(tmp_path, monkeypatch, isolated_state):
    evaluate_trust(make_manifest(CREATOR), "tofu")
    assert (
        json.loads((isolated_state / "tofu.json").read_text())["manifests"]["demo-5peer"]["creator_pubkey"]
        == CREATOR_PUB
    )
    monkeypatch.setenv("QUINKGL_TOFU_STORE", str(tmp_path / "custom.json"))
    evaluate_trust(make_manifest(IMPOSTOR), "tofu")  # a different store: first sight again
    assert (tmp_path / "custom.json").exists()


def test_tofu_rejects_invalid_signature_and_accepts_unsigned_on_first_sight(store):
    with pytest.raises(SignatureError):
        evaluate_trust(tampered(make_manifest(CREATOR)), "tofu", tofu_store=store)
    decision = evaluate_trust(make_manifest(), "tofu", tofu_store=store)
    assert decision.signature is SignatureStatus.UNSIGNED and decision.warnings
    assert store.lookup("demo-5peer") is None


def test_corrupt_tofu_store_is_an_error_not_a_silent_reset(store):
    evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=store)
    with open(store.path, "w") as handle:
        handle.write("{garbage")
    with pytest.raises(TrustError, match="unreadable"):
        evaluate_trust(make_manifest(IMPOSTOR), "tofu", tofu_store=store)


def _remember(path, name, key_hex):
    with contextlib.suppress(TrustError):
        TofuStore(path).check_and_remember(name, key_hex)


def test_concurrent_first_sight_keeps_one_creator_per_name(tmp_path):
    path = str(tmp_path / "tofu.json")
    names = [f"swarm-{i}" for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_remember, args=(path, n, keys.public_key_text(keys.generate_private_key())))
        for n in names
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(_read_json(path)["manifests"]) == names


def test_pinned_requires_a_valid_signature_by_a_trusted_key():
    signed = make_manifest(CREATOR)
    assert evaluate_trust(signed, "pinned", trusted_keys=[CREATOR_PUB]).creator == CREATOR_PUB
    with pytest.raises(TrustError, match="not a trusted key"):
        evaluate_trust(make_manifest(IMPOSTOR), "pinned", trusted_keys=[CREATOR_PUB])
    with pytest.raises(TrustError, match="unsigned"):
        evaluate_trust(make_manifest(), "pinned", trusted_keys=[CREATOR_PUB])
    with pytest.raises(SignatureError):
        evaluate_trust(tampered(signed), "pinned", trusted_keys=[CREATOR_PUB])
    with pytest.raises(TrustError, match="needs at least one"):
        evaluate_trust(signed, "pinned")
    with pytest.raises(TrustError, match="trusted-pubkey"):
        evaluate_trust(signed, "pinned", trusted_keys=["ed25519:zz"])


def test_signature_with_swapped_creator_key_is_invalid():
    doc = manifest_to_dict(make_manifest(CREATOR))
    doc["creator_pubkey"] = keys.public_key_text(IMPOSTOR)
    with pytest.raises(SignatureError):
        evaluate_trust(parse_manifest(json.dumps(doc)), "pinned", trusted_keys=[doc["creator_pubkey"]])


def test_expired_manifests_are_refused_by_every_policy(store):
    old = make_manifest(CREATOR, expires_at="2020-01-01")
    for policy in TrustPolicy:
        with pytest.raises(ExpiredError, match="expired at 2020-01-01"):
            evaluate_trust(old, policy, trusted_keys=[CREATOR_PUB], tofu_store=store)
    day_end = make_manifest(CREATOR, expires_at="2030-06-01")
    assert verify_manifest(day_end, now=dt.datetime(2030, 6, 1, 23, 59, tzinfo=dt.timezone.utc))
    with pytest.raises(ExpiredError):
        verify_manifest(day_end, now=dt.datetime(2030, 6, 2, 0, 0, tzinfo=dt.timezone.utc))


def test_tofu_state_file_is_private(store):
    evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=store)
    assert os.stat(store.path).st_mode & 0o077 == 0


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)
