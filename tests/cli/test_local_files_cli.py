"""Hostile local files through the real `quinkgl` command: one `error:` line, the documented exit code, no
traceback, and never a hang (issue 7, item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import make_manifest, manifest_create
from quinkgl import keys
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import manifest_to_dict, write_manifest


def assert_clean_error(result, code):
    assert result.returncode == int(code), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_manifest_name_with_a_trailing_newline_is_refused(cli, tmp_path):
    doc = manifest_to_dict(make_manifest(keys.generate_private_key(), name="rt-FedAvg"))
    doc["name"] = "rt-FedAvg\n"
    (tmp_path / "m.qgl").write_text(json.dumps(doc))
    result = cli("manifest", "verify", "m.qgl")
    assert_clean_error(result, ExitCode.MANIFEST_INVALID)
    assert "$.name" in result.stderr


def test_fifos_and_devices_as_manifest_key_or_tofu_store_fail_fast(cli, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    for path in ("fifo", "zero"):
        line = assert_clean_error(cli("manifest", "verify", path, timeout=60), ExitCode.MANIFEST_INVALID)
        assert "not a regular file" in line
        line = assert_clean_error(cli("manifest", "show", path, timeout=60), ExitCode.MANIFEST_INVALID)
        created = cli(*manifest_create("x", "sha256:" + "4" * 64, "--sign-with", path), timeout=60)
        assert "not a regular file" in assert_clean_error(created, ExitCode.KEY_ERROR)
    write_manifest(make_manifest(keys.generate_private_key()), tmp_path / "m.qgl")
    for path in ("fifo", "zero"):
        result = cli(
            "run",
            "--manifest",
            "m.qgl",
            "--data",
            "mnist",
            env={"QUINKGL_TOFU_STORE": str(tmp_path / path)},
            timeout=60,
        )
        assert "TOFU store" in assert_clean_error(result, ExitCode.UNTRUSTED)


def test_a_damaged_tofu_entry_is_a_clean_untrusted_error(cli, tmp_path):
    write_manifest(make_manifest(keys.generate_private_key()), tmp_path / "m.qgl")
    store = tmp_path / "tofu.json"
    store.write_text(json.dumps({"version": 1, "manifests": {"demo-5peer": ["not", "an", "object"]}}))
    result = cli("run", "--manifest", "m.qgl", "--data", "mnist", env={"QUINKGL_TOFU_STORE": str(store)}, timeout=60)
    assert "damaged" in assert_clean_error(result, ExitCode.UNTRUSTED)


def test_a_second_process_on_one_checkpoint_dir_is_refused(cli, tmp_path):
    write_manifest(make_manifest(keys.generate_private_key()), tmp_path / "m.qgl")
    ckpt = tmp_path / "ckpt"
    # The first peer holds the directory (the same CheckpointStore lock `quinkgl run` takes at start).
    code = (
        "import sys\nfrom quinkgl.checkpoint import CheckpointStore\n"
        "s = CheckpointStore(sys.argv[1]); s.acquire_lock(); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(ckpt)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli(
            "run", "--manifest", "m.qgl", "--data", "mnist", "--checkpoint-dir", str(ckpt), "--rounds", "1", timeout=120
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    line = assert_clean_error(result, ExitCode.CHECKPOINT_IN_USE)
    assert f"in use by process {holder.pid}" in line and "--checkpoint-dir" in line
