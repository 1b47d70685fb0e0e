"""The data schema hash: the shape of the data a swarm trains on (input shape, output shape, label type)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

DATA_SCHEMA_VERSION = 1


def data_schema_hash(input_shape: Sequence[int], output_shape: Sequence[int], label_type: str) -> str:
    """``sha256:<64 hex>`` over the canonical JSON of the shapes and label type (versioned)."""
    doc = {
        "data_schema_version": DATA_SCHEMA_VERSION,
        "input_shape": [int(d) for d in input_shape],
        "output_shape": [int(d) for d in output_shape],
        "label_type": label_type,
    }
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
