"""Per-user locations QuinkGL writes to (state such as the TOFU cache, caches), each overridable by env var."""

from __future__ import annotations

import os


def state_dir() -> str:
    """``$QUINKGL_STATE_DIR``, else ``$XDG_STATE_HOME/quinkgl``, else ``~/.local/state/quinkgl``."""
    if os.environ.get("QUINKGL_STATE_DIR"):
        return os.environ["QUINKGL_STATE_DIR"]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "quinkgl")


def cache_dir() -> str:
    """``$QUINKGL_CACHE_DIR``, else ``$XDG_CACHE_HOME/quinkgl``, else ``~/.cache/quinkgl``."""
    if os.environ.get("QUINKGL_CACHE_DIR"):
        return os.environ["QUINKGL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "quinkgl")


def tofu_store_path() -> str:
    """The TOFU cache file: ``$QUINKGL_TOFU_STORE``, else ``<state dir>/tofu.json``."""
    return os.environ.get("QUINKGL_TOFU_STORE") or os.path.join(state_dir(), "tofu.json")
