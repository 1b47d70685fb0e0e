"""Hostile local files (issue 7, item 8): whole-value field patterns, bounded reads of regular files only, the
checkpoint directory lock, no appending through a symlink, damaged TOFU entries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from helpers import make_manifest
from quinkgl import keys
from quinkgl.checkpoint import CheckpointDirError, CheckpointStore, MetricsLog
from quinkgl.errors import CheckpointInUseError, KeyFileError, ManifestError, TrustError
from quinkgl.fsutil import UnsafeFileError, read_regular_file
from quinkgl.manifest.codec import load_manifest, manifest_to_dict, parse_manifest, write_manifest
from quinkgl.trust import TofuStore, evaluate_trust

CREATOR = keys.generate_private_key()
IMPOSTOR = keys.generate_private_key()


@contextlib.contextmanager
def must_not_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) if the block blocks, e.g. on a FIFO."""

    def alarm(*_):
        raise AssertionError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def dev_zero(tmp_path):
    path = tmp_path / "zero"
    path.symlink_to("/dev/zero")
    return path


# -- field patterns ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "rt-FedAvg\n"),
        ("created_at", "2026-01-01\n"),
        ("expires_at", "2099-12-31\n"),
        ("model.arch_hash", "sha256:" + "4" * 64 + "\n"),
        ("aggregation.name", "FedAvg\n"),
        ("bootstrap_peers", ["127.0.0.1:7001\n"]),
    ],
)
def test_a_trailing_newline_never_passes_a_field_pattern(field, value):
    doc = manifest_to_dict(make_manifest(name="rt-FedAvg"))
    target = doc
    *parents, leaf = field.split(".")
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    with pytest.raises(ManifestError):
        parse_manifest(json.dumps(doc))


def test_a_name_with_a_trailing_newline_cannot_bypass_tofu(tmp_path):
    store = TofuStore(str(tmp_path / "tofu.json"))
    evaluate_trust(make_manifest(CREATOR, name="rt-FedAvg"), "tofu", tofu_store=store)
    # The impostor's copy under "rt-FedAvg\n" would be a different TOFU key, shown as the same name: refused.
    forged = manifest_to_dict(make_manifest(IMPOSTOR, name="rt-FedAvg"))
    forged["name"] = "rt-FedAvg\n"
    path = tmp_path / "forged.qgl"
    path.write_text(json.dumps(forged))
    with pytest.raises(ManifestError, match="name"):
        load_manifest(path)
    with pytest.raises(TrustError, match="TOFU conflict"):
        evaluate_trust(make_manifest(IMPOSTOR, name="rt-FedAvg"), "tofu", tofu_store=store)


# -- bounded reads of regular files ------------------------------------------------------------------------------


def test_read_regular_file_refuses_fifos_devices_directories_and_oversized_files(tmp_path, fifo, dev_zero):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    with must_not_hang():
        with pytest.raises(UnsafeFileError, match="FIFO"):
            read_regular_file(fifo, 100)
        with pytest.raises(UnsafeFileError, match="character device"):
            read_regular_file(dev_zero, 100)
        with pytest.raises(UnsafeFileError, match="directory"):
            read_regular_file(tmp_path, 100)
        with pytest.raises(UnsafeFileError, match="more than the 100"):
            read_regular_file(big, 100)
        assert read_regular_file(tmp_path / "ok", 100) == b"x" * 100
        with pytest.raises(FileNotFoundError):
            read_regular_file(tmp_path / "missing", 100)


def test_manifest_and_key_reads_refuse_fifos_and_devices(fifo, dev_zero):
    with must_not_hang():
        for path in (fifo, dev_zero):
            with pytest.raises(ManifestError, match="not a regular file"):
                load_manifest(path)
            with pytest.raises(KeyFileError, match="not a regular file"):
                keys.load_private_key(str(path))


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_tofu_store_that_is_a_fifo_or_dev_zero_is_a_trust_error(kind, request):
    path = request.getfixturevalue(kind)
    with must_not_hang():
        with pytest.raises(TrustError, match="unreadable"):
            TofuStore(str(path)).lookup("demo-5peer")
        with pytest.raises(TrustError, match="unreadable"):
            evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=TofuStore(str(path)))


@pytest.mark.parametrize("entry", [[], "ed25519:00", 7, None, {"first_seen": "x"}, {"creator_pubkey": 5}])
def test_a_damaged_tofu_entry_is_a_clean_trust_error(tmp_path, entry):
    path = tmp_path / "tofu.json"
    path.write_text(json.dumps({"version": 1, "manifests": {"demo-5peer": entry}}))
    store = TofuStore(str(path))
    if entry is None:  # null is "no entry": first use records the creator
        assert evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=store).first_seen
        return
    with pytest.raises(TrustError, match="damaged"):
        store.lookup("demo-5peer")
    with pytest.raises(TrustError, match="damaged"):
        evaluate_trust(make_manifest(CREATOR), "tofu", tofu_store=store)
    with pytest.raises(TrustError, match="damaged"):
        evaluate_trust(make_manifest(), "tofu", tofu_store=store)  # unsigned: the lookup path


# -- checkpoints ---------------------------------------------------------------------------------------------------


def _save(store, r):
    store.save(r, {"w": torch.full((3,), float(r))}, None, {"round": r}, {})


def test_checkpoint_reads_skip_fifos_and_devices_instead_of_hanging(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1)
    _save(store, 2)
    (tmp_path / "round-000002" / "state.json").unlink()
    (tmp_path / "round-000002" / "state.json").symlink_to("/dev/zero")
    (tmp_path / "latest").unlink()
    os.mkfifo(tmp_path / "latest")
    with must_not_hang():
        ck = store.load_latest()
    assert ck is not None and ck.round == 1
    reasons = " | ".join(s.reason for s in ck.skipped)
    assert "not a regular file" in reasons and "latest pointer is unreadable" in reasons

    (tmp_path / "round-000001" / "model.safetensors").unlink()
    os.mkfifo(tmp_path / "round-000001" / "model.safetensors")
    with must_not_hang():
        assert store.load_latest() is None


def test_metrics_are_never_appended_through_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ck = tmp_path / "ck"
    store = CheckpointStore(ck)
    (ck / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(CheckpointDirError, match="symlink"):
        store.metrics_log.append({"round": 1})
    assert victim.read_text() == "precious\n"
    os.unlink(ck / "metrics.jsonl")
    os.mkfifo(ck / "metrics.jsonl")
    with must_not_hang():
        with pytest.raises(CheckpointDirError):
            store.metrics_log.append({"round": 1})
        with pytest.raises(UnsafeFileError):
            MetricsLog(ck / "metrics.jsonl").read()


def test_metrics_log_still_repairs_a_cut_last_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"round": 1})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 2, "cut')
    log.append({"round": 3})
    assert [r["round"] for r in log.read()] == [1, 3]


def test_the_checkpoint_directory_is_locked_until_released(tmp_path):
    first, second = CheckpointStore(tmp_path), CheckpointStore(tmp_path)
    first.acquire_lock()
    first.acquire_lock()  # idempotent
    with pytest.raises(CheckpointInUseError, match=f"in use by process {os.getpid()}"):
        second.acquire_lock()
    first.release_lock()
    second.acquire_lock()
    second.release_lock()


def test_a_second_process_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    code = (
        "import sys\nfrom quinkgl.checkpoint import CheckpointStore\n"
        "s = CheckpointStore(sys.argv[1]); s.acquire_lock(); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointInUseError, match=f"process {holder.pid}"):
            CheckpointStore(tmp_path).acquire_lock()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    store = CheckpointStore(tmp_path)
    store.acquire_lock()  # the kernel dropped the dead holder's lock
    store.release_lock()


def test_a_planted_lock_file_that_is_not_a_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / ".lock")
    with must_not_hang(), pytest.raises(CheckpointDirError, match="not a regular file"):
        CheckpointStore(tmp_path).acquire_lock()
    os.unlink(tmp_path / ".lock")
    (tmp_path / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointDirError):
        CheckpointStore(tmp_path).acquire_lock()
    assert not (tmp_path / "elsewhere").exists()


def test_saving_keeps_the_lock_file(tmp_path):
    store = CheckpointStore(tmp_path, keep=1)
    store.acquire_lock()
    for r in (1, 2, 3):
        _save(store, r)
    assert (tmp_path / ".lock").exists() and store.rounds() == [3]
    with pytest.raises(CheckpointInUseError):
        CheckpointStore(tmp_path).acquire_lock()
    store.release_lock()


def test_write_manifest_roundtrip_still_works(tmp_path):
    manifest = make_manifest(CREATOR)
    write_manifest(manifest, tmp_path / "m.qgl")
    assert load_manifest(tmp_path / "m.qgl") == manifest


def test_a_libp2p_identity_key_that_is_a_fifo_fails_instead_of_hanging(tmp_path):
    identity = pytest.importorskip("quinkgl_transport_libp2p.identity")
    os.mkfifo(tmp_path / identity.IDENTITY_FILENAME)
    with must_not_hang(), pytest.raises(identity.IdentityError, match="not a regular file"):
        identity.load_or_create_identity(tmp_path)
