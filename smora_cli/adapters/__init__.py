"""Rank-expert adapters: config, routers, the layer, injection, files and folding."""

from smora_cli.adapters.config import METHODS, AdapterConfig
from smora_cli.adapters.fold import fold
from smora_cli.adapters.inject import (
    adapter_config_of,
    adapter_layers,
    adapters_disabled,
    attach,
    count_parameters,
    routing_context,
)
from smora_cli.adapters.io import load_adapter, read_adapter_config, save_adapter
from smora_cli.adapters.layer import RankExpertLinear
from smora_cli.adapters.state import on_optimizer_step, rank_map, router_stats

__all__ = [
    "METHODS",
    "AdapterConfig",
    "RankExpertLinear",
    "adapter_config_of",
    "adapter_layers",
    "adapters_disabled",
    "attach",
    "count_parameters",
    "fold",
    "load_adapter",
    "on_optimizer_step",
    "rank_map",
    "read_adapter_config",
    "router_stats",
    "routing_context",
    "save_adapter",
]
