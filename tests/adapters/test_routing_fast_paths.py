"""The optimised routing paths against plain reference implementations kept here.

What the library computes in fewer ops, each checked against the straightforward computation
of the same numbers: balance counts (one scatter per layer, pick weights shared by all layers
of a batch), the balance-bias update of every layer at once, MoE-LoRA's Switch loss from the
counts, MoRE's task gates (one `max` for argmax + straight-through) and its contrastive loss
on the first real tokens found once per batch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smora_cli import AdapterConfig, attach, routing_context
from smora_cli.adapters import adapter_layers, on_optimizer_step
from smora_cli.adapters.routers import RoutingInputs
from smora_cli.adapters.state import aux_losses
from tests.adapters.test_contract import (
    CASES,
    IN,
    ROUTER_CASES,
    TASK_IDS,
    make_layer,
    reference_gate,
    tokens,
)

COUNTED = [c for c in CASES if ROUTER_CASES[c]["method"] in ("moe-lora", "smora", "flylora")]


def _mask() -> torch.Tensor:
    """[3, 5] real-token mask: row 0 left-padded, row 2 with a padded last position."""
    mask = torch.ones(3, 5, dtype=torch.float64)
    mask[0, :2] = 0
    mask[2, 4] = 0
    return mask


def reference_picks(layer, x: torch.Tensor) -> torch.Tensor:
    """[B, S, E] 1 where the method's formula selects expert e for the token."""
    z = x @ layer.lora_A.T
    gate = reference_gate(layer, x, z)  # non-zero exactly at the ranks of selected experts
    return (gate != 0).unflatten(-1, (-1, layer.config.expert_rank)).any(-1).to(x.dtype)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("case", COUNTED)
def test_balance_counts_are_the_picks_of_real_tokens(case, masked):
    layer = make_layer(case).train()
    mask = _mask() if masked else torch.ones(3, 5, dtype=torch.float64)
    expected = torch.zeros_like(layer.router.counter.pending)
    for seed in (3, 4):  # two micro-batches accumulate
        x = tokens(seed=seed)
        with routing_context(layer, task_ids=TASK_IDS, token_masks=(mask,) if masked else None):
            layer(x)
        expected += (reference_picks(layer, x) * mask[..., None]).sum((0, 1))
    torch.testing.assert_close(layer.router.counter.pending, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["smora", "flylora"])
def test_every_layers_balance_bias_moves_by_its_own_counts(method):
    """The batched update equals b + u * sign(mean(c) - c), layer by layer."""
    rate = 0.01
    model = nn.Sequential(*[nn.Linear(IN, IN) for _ in range(3)])
    config = AdapterConfig(
        method=method, r=8, k=2, balance_rate=rate, target_modules=["0", "1", "2"]
    )
    attach(model, config)
    layers = [layer for _, layer in adapter_layers(model)]
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in layers:
            layer.lora_B.normal_(generator=generator)
            layer.router.balance_bias.normal_(generator=generator)
    model.train()
    with routing_context(model, token_masks=(_mask().float(),)):
        model(tokens(dtype=torch.float32))
    counts = [layer.router.counter.pending.clone() for layer in layers]
    biases = [layer.router.balance_bias.clone() for layer in layers]
    assert len({tuple(c.tolist()) for c in counts}) > 1, "layers should count differently"
    on_optimizer_step(model)
    for layer, step_counts, bias in zip(layers, counts, biases, strict=True):
        expected = bias + rate * torch.sign(step_counts.mean() - step_counts)
        torch.testing.assert_close(layer.router.balance_bias, expected, rtol=0, atol=0)
        torch.testing.assert_close(layer.router.counter.seen, step_counts, rtol=0, atol=0)
        assert not layer.router.counter.pending.any()


def reference_switch_loss(layer, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """E * sum_e f_e P_e over real tokens, written out (moe-lora without centering)."""
    experts = layer.config.r // layer.config.expert_rank
    probs = torch.softmax(x @ layer.router.gate.weight.T, dim=-1).reshape(-1, experts)
    weights = torch.ones(probs.shape[0], dtype=x.dtype) if mask is None else mask.reshape(-1)
    total = weights.sum().clamp_min(1.0)
    picked = reference_picks(layer, x.detach()).reshape(-1, experts)
    fraction = (picked * weights[:, None]).sum(0) / (total * layer.config.active_experts)
    mean_prob = (probs * weights[:, None]).sum(0) / total
    return experts * (fraction * mean_prob).sum()


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("case", ["moe-lora-p1", "moe-lora-p2"])
def test_switch_loss_and_its_gradients_follow_the_formula(case, masked):
    layer = make_layer(case).train()
    mask = _mask() if masked else None
    x = tokens().requires_grad_(True)
    with routing_context(layer, token_masks=mask):
        layer(x)
    loss = layer.last_aux["balance"]
    expected = reference_switch_loss(layer, x, mask)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    wrt = [x, layer.router.gate.weight]
    for ours, theirs in zip(
        torch.autograd.grad(loss, wrt), torch.autograd.grad(expected, wrt), strict=True
    ):
        assert theirs.abs().sum() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_more_task_gates_are_the_straight_through_formula_bit_for_bit():
    layer = make_layer("more", seed=4)
    router = layer.router
    weights, choice = router.task_gates()
    # The formula as written before the optimisation: argmax, one-hot, gather, prefix mask.
    probs = torch.softmax(router.selector(router.task_embedding), dim=-1)
    expected_choice = probs.argmax(-1)
    straight = F.one_hot(expected_choice, probs.shape[-1]).to(probs) + probs - probs.detach()
    gate = straight.gather(-1, expected_choice[:, None])
    prefix = (torch.arange(probs.shape[-1])[None, :] <= expected_choice[:, None]).to(probs)
    expected = gate * prefix * router.rank_factors
    assert torch.equal(choice, expected_choice)
    assert torch.equal(weights, expected)
    upstream = torch.randn(weights.shape, generator=torch.Generator().manual_seed(1)).to(weights)
    params = [router.selector.weight, router.selector.bias, router.task_embedding]
    ours = torch.autograd.grad((weights * upstream).sum(), params)
    theirs = torch.autograd.grad((expected * upstream).sum(), params)
    for a, b in zip(ours, theirs, strict=True):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_more_contrastive_loss_and_gradients_follow_the_formula():
    layer = make_layer("more").train()
    mask = _mask()
    mask[1, :1] = 0  # a second left-padded row
    x = tokens().requires_grad_(True)
    with routing_context(layer, task_ids=TASK_IDS, token_masks=(mask,)):
        layer(x)
    loss = aux_losses(layer)["contrastive"]
    first = torch.stack([x[b, int(mask[b].nonzero()[0])] for b in range(x.shape[0])])
    embedding = layer.router.task_embedding
    cosine = F.normalize(first, dim=-1) @ F.normalize(embedding, dim=-1).T
    expected = F.cross_entropy(cosine / layer.config.contrastive_temperature, TASK_IDS)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(
        torch.autograd.grad(loss, [x, embedding]),
        torch.autograd.grad(expected, [x, embedding]),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_routing_inputs_derive_each_value_once():
    mask = _mask()
    decoder_mask = torch.ones(3, 4)
    inputs = RoutingInputs(task_ids=TASK_IDS, token_masks=(mask, decoder_mask))
    weights = inputs.token_weights(mask.shape)
    torch.testing.assert_close(weights, mask.float(), rtol=0, atol=0)
    assert inputs.token_weights(mask.shape) is weights  # shared by every later layer
    assert inputs.token_weights(torch.Size((2, 5))) is None
    chosen = torch.randint(0, 8, (3, 5, 2))
    like = torch.zeros(8, dtype=torch.float64)
    picks = inputs.pick_weights(chosen, like)
    assert picks.dtype == torch.float64
    assert torch.equal(picks, mask.reshape(-1).repeat_interleave(2))
    assert inputs.pick_weights(chosen, like) is picks
    rows = inputs.first_token_rows(3, 5, torch.device("cpu"))
    assert rows.tolist() == [2, 5, 10]  # row 0 starts after its two padded positions
    assert RoutingInputs().first_token_rows(3, 5, torch.device("cpu")).tolist() == [0, 5, 10]


def test_contrastive_losses_of_layers_of_different_widths_equal_each_layers_own():
    """Layers are stacked by shape for one batched loss; the mean equals the per-layer mean."""
    model = nn.Sequential(nn.Linear(IN, IN), nn.Linear(IN, 6), nn.Linear(6, 4))
    config = AdapterConfig(
        method="more", r=4, task_names=["a", "b"], target_modules=["0", "1", "2"]
    )
    attach(model, config)
    layers = [layer for _, layer in adapter_layers(model)]
    inputs = {}
    for layer in layers:  # the input each layer routes on
        layer.register_forward_hook(lambda module, args, out: inputs.__setitem__(module, args[0]))
    model.train()
    mask = _mask().float()
    x = tokens(dtype=torch.float32).requires_grad_(True)
    with routing_context(model, task_ids=TASK_IDS, token_masks=(mask,)):
        model(x)
    loss = aux_losses(model)["contrastive"]
    expected = []
    for layer in layers:
        routed = inputs[layer]
        first = torch.stack([routed[b, int(mask[b].nonzero()[0])] for b in range(3)])
        embedding = layer.router.task_embedding
        cosine = F.normalize(first, dim=-1) @ F.normalize(embedding, dim=-1).T
        expected.append(F.cross_entropy(cosine / config.contrastive_temperature, TASK_IDS))
    expected = torch.stack(expected).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    wrt = [x, *(layer.router.task_embedding for layer in layers)]
    for ours, theirs in zip(
        torch.autograd.grad(loss, wrt, retain_graph=True),
        torch.autograd.grad(expected, wrt),
        strict=True,
    ):
        assert theirs.abs().sum() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
