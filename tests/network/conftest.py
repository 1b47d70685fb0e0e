"""Fixtures for tests that run `quinkgl` on several "hosts" (network namespaces, see netlab.py).

Skipped with the reason when namespaces cannot be made (not root, no iproute2, no nft for NAT tests).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from network.netlab import LabUnavailable, NetLab, check_available

from helpers import guide_arch_hash, make_manifest
from quinkgl.manifest.codec import write_manifest


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[NetLab]:
    """A fresh lab; everything it made is removed afterwards, also when the test fails."""
    try:
        check_available()
    except LabUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    lab = NetLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
        assert lab.leftovers() == []


@pytest.fixture
def nat_available() -> None:
    try:
        check_available(nat=True)
    except LabUnavailable as exc:
        pytest.skip(f"NAT lab unavailable: {exc}")


@pytest.fixture
def swarm_files(tmp_path: Path, guide_script: Path, mnist_root: Path) -> list[str]:
    """A manifest (no bootstrap peers of its own) and the guide's script in the lab's folder; common run args."""
    manifest = make_manifest(arch_hash=guide_arch_hash(), name="hosts")
    write_manifest(manifest, tmp_path / "hosts.qgl")
    if guide_script.parent != tmp_path:
        shutil.copy(guide_script, tmp_path / "mnist_peer_script.py")
    return [
        "--manifest",
        str(tmp_path / "hosts.qgl"),
        "--script",
        str(tmp_path / "mnist_peer_script.py"),
        "--local-steps",
        "5",
        "--max-eval-batches",
        "3",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
    ]
