"""Rank-expert adapters: config, routers, the layer, injection, files and folding.

Names are imported on first use, so that reading a recipe (which needs only
`adapters.config`) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "METHODS": "config",
    "AdapterConfig": "config",
    "fold": "folding",
    "adapter_config_of": "inject",
    "adapter_layers": "inject",
    "adapters_disabled": "inject",
    "attach": "inject",
    "count_parameters": "inject",
    "routing_context": "inject",
    "load_adapter": "io",
    "read_adapter_config": "io",
    "save_adapter": "io",
    "RankExpertLinear": "layer",
    "on_optimizer_step": "state",
    "rank_map": "state",
    "router_stats": "state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
