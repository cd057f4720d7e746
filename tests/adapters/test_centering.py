"""`center_router_input`: routing on x - mean(x), the mean updated once per optimizer step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smora_cli import AdapterConfig, attach, load_adapter, routing_context, save_adapter
from smora_cli.adapters import adapter_layers, on_optimizer_step
from smora_cli.adapters.layer import RankExpertLinear
from smora_cli.errors import AdapterConfigError


def _layer(method="smora", **extra) -> RankExpertLinear:
    torch.manual_seed(0)
    config = AdapterConfig(method=method, r=8, k=2, center_router_input=True, **extra)
    return RankExpertLinear(nn.Linear(16, 12), config, name="layer").train()


def _massive(tokens: int, seed: int) -> torch.Tensor:
    """Token noise plus one large shared component, like LLM hidden states."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.zeros(16)
    shared[3] = 40.0
    return torch.randn(1, tokens, 16, generator=generator) + shared


def test_first_step_sets_the_mean_of_real_tokens_then_a_running_average():
    layer = _layer()
    x1, x2 = _massive(10, 1), _massive(6, 2)
    mask = torch.ones(1, 10)
    mask[0, :4] = 0  # padding never enters the mean
    with routing_context(layer, token_masks=(mask,)):
        layer(x1)
    on_optimizer_step(layer)
    torch.testing.assert_close(layer.router.centering.mean, x1[0, 4:].mean(0))
    layer(x2)
    on_optimizer_step(layer)
    expected = (x1[0, 4:].mean(0) + x2[0].mean(0)) / 2  # rate 1/2 at the second update
    torch.testing.assert_close(layer.router.centering.mean, expected)
    frozen = layer.router.centering.mean.clone()
    layer.eval()(x1)
    on_optimizer_step(layer)
    assert torch.equal(layer.router.centering.mean, frozen)


def test_routing_uses_the_centered_input():
    layer = _layer()
    mu = torch.randn(16)
    layer.router.centering.mean.copy_(mu)
    layer.router.balance_bias.copy_(torch.randn(8) * 0.01)
    x = _massive(20, 3)
    layer(x)
    picked = layer.router.counter.pending.clone()
    scores = torch.sigmoid((x - mu) @ layer.router.gate.weight.T) + layer.router.balance_bias
    chosen = scores.topk(2, dim=-1).indices
    assert torch.equal(picked, torch.bincount(chosen.reshape(-1), minlength=8).float())


@pytest.mark.parametrize("method", ["smora", "moe-lora"])
def test_centering_undoes_the_collapse_a_shared_component_causes(method):
    extra = {"expert_rank": 1}
    shares = {}
    for center in (False, True):
        torch.manual_seed(0)
        config = AdapterConfig(method=method, r=8, k=2, center_router_input=center, **extra)
        layer = RankExpertLinear(nn.Linear(16, 12), config, name="layer").train()
        layer(_massive(200, 4))
        on_optimizer_step(layer)  # the centered router learns the mean here
        layer(_massive(200, 5))
        counts = layer.router.counter.pending
        shares[center] = float(counts.max() / 200)  # share of tokens picking the busiest
    assert shares[False] == 1.0
    assert shares[True] < 0.6


def test_mean_is_saved_and_restored(tmp_path):
    from tests import tiny_models

    config = AdapterConfig(method="smora", r=8, k=2, center_router_input=True)
    model = attach(tiny_models.llama(), config).train()
    model(**tiny_models.inputs())
    on_optimizer_step(model)
    save_adapter(model, tmp_path / "adapter")
    loaded = load_adapter(tiny_models.llama(), tmp_path / "adapter")
    for (_, ours), (_, theirs) in zip(adapter_layers(model), adapter_layers(loaded), strict=True):
        assert theirs.router.centering.mean.abs().sum() > 0
        assert torch.equal(ours.router.centering.mean, theirs.router.centering.mean)


def test_only_learned_gates_can_be_centered():
    with pytest.raises(AdapterConfigError, match="center_router_input"):
        AdapterConfig(method="flylora", r=8, k=2, center_router_input=True)
    AdapterConfig(method="hydra", r=8, center_router_input=True)
