"""The ``quinkgl`` command-line interface (distribution quinkgl-cli)."""

__version__ = "0.4.0"
