"""`--device`: an unusable device is one usage-error line before anything is built."""

from __future__ import annotations

import pytest
import torch

from helpers import guide_arch_hash, make_manifest
from quinkgl.manifest.codec import write_manifest


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_unavailable_device_is_one_line_and_exit_2(cli, tmp_path, guide_script, command):
    write_manifest(make_manifest(arch_hash=guide_arch_hash()), tmp_path / "m.qgl")
    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    result = cli(
        command,
        "--manifest",
        "m.qgl",
        "--script",
        "mnist_peer_script.py",
        "--trust-policy",
        "open",
        "--device",
        device,
        "--rounds",
        "1",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --device {device}")
    assert "Traceback" not in result.stderr
