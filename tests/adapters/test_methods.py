"""The capability table (adapters/methods.py) agrees with what each method's layer does."""

import pytest
import torch
from torch import nn

from smora_cli.adapters import AdapterConfig, adapter_layers, attach
from smora_cli.adapters.methods import METHODS, method_of, methods_where
from smora_cli.errors import AdapterConfigError, AdapterError

CONFIGS = {
    "lora": dict(r=4),
    "moe-lora": dict(r=4, k=2),
    "smora": dict(r=4, k=2),
    "flylora": dict(r=4, k=2),
    "more": dict(r=4, task_names=["a", "b"]),
    "hydra": dict(r=4),
}


def layer_of(method: str, **extra):
    config = AdapterConfig(method=method, target_modules=["0"], **CONFIGS[method], **extra)
    torch.manual_seed(0)
    return next(iter(dict(adapter_layers(attach(nn.Sequential(nn.Linear(6, 5)), config))).values()))


def test_every_method_is_described():
    assert set(CONFIGS) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_capabilities_match_the_layer(method):
    capabilities = method_of(method)
    layer = layer_of(method)
    assert layer.router.trains_a == capabilities.trains_a
    task = 0 if capabilities.task_routed else None
    if capabilities.foldable:
        assert layer.delta_weight(task).shape == (5, 6)
    else:
        with pytest.raises(AdapterError):
            layer.delta_weight(task)


@pytest.mark.parametrize("method", METHODS)
def test_capabilities_match_the_config_rules(method):
    capabilities = method_of(method)
    without_k = {key: v for key, v in CONFIGS[method].items() if key != "k"}
    if capabilities.token_routed:
        with pytest.raises(AdapterConfigError, match="`k` \\(activated rank\\) is required"):
            AdapterConfig(method=method, **without_k)
        dense = AdapterConfig(method=method, r=4, k=4)  # k = r: every rank, a legitimate case
        assert dense.active_experts == 4
    if capabilities.learned_gate:
        assert layer_of(method, center_router_input=True).config.center_router_input
    else:
        with pytest.raises(AdapterConfigError, match="applies to learned token gates"):
            AdapterConfig(method=method, center_router_input=True, **CONFIGS[method])
    if capabilities.task_routed:  # the gate needs the tasks it routes by
        config = AdapterConfig(method=method, target_modules=["0"], r=4)
        with pytest.raises(AdapterError, match="routes by task"):
            attach(nn.Sequential(nn.Linear(6, 5)), config)


def test_capability_lists():
    assert methods_where("token_routed") == ("moe-lora", "smora", "flylora")
    assert methods_where("foldable") == ("lora", "more")
    assert methods_where("trains_a") == ("lora", "moe-lora", "smora", "more", "hydra")
