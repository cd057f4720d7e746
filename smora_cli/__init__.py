"""smora: multi-task fine-tuning with rank-wise Mixture-of-Experts LoRA adapters.

The Python API (see README "Python API"):

    from smora_cli import AdapterConfig, attach, save_adapter, load_adapter, fold

Names are imported lazily so that `smora --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "AdapterConfig": "smora_cli.adapters.config",
    "attach": "smora_cli.adapters.inject",
    "count_parameters": "smora_cli.adapters.inject",
    "routing_context": "smora_cli.adapters.inject",
    "fold": "smora_cli.adapters.folding",
    "rank_map": "smora_cli.adapters.state",
    "save_adapter": "smora_cli.adapters.io",
    "load_adapter": "smora_cli.adapters.io",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'smora_cli' has no attribute {name!r}")
