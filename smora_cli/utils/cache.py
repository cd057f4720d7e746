"""smora's cache folder: built offline data and converted models, reused across runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$SMORA_CACHE` if set, else `$XDG_CACHE_HOME/smora` (default `~/.cache/smora`)."""
    if os.environ.get("SMORA_CACHE"):
        return Path(os.environ["SMORA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "smora"
