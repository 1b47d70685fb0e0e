"""Fixtures for the libp2p transport tests (helpers live in p2p_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A fresh peer-registry directory for one test."""
    path = tmp_path / "registry"
    path.mkdir()
    return path
