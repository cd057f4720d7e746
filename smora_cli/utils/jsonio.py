"""Strict JSON for files other tools read: NaN and infinities, which JSON lacks, become null."""

from __future__ import annotations

import math


def json_safe(value):
    """`value` with every NaN/inf float, at any depth of dicts and lists, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
