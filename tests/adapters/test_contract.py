"""One contract every router case must keep: a new router added to ROUTER_CASES gets it all.

Each case is a method with the granularity / gate form that changes its code path. The
reference below recomputes y = W0 x + s B diag(g(x)) A x from METHODS.md's formulas with plain
tensor ops (never calling smora's routers), so output and every gradient are checked against
autograd through the formula itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smora_cli import AdapterConfig, attach, load_adapter, routing_context, save_adapter
from smora_cli.adapters import adapters_disabled, on_optimizer_step
from smora_cli.adapters.layer import RankExpertLinear
from smora_cli.errors import AdapterError
from tests import tiny_models

IN, OUT, R = 12, 10, 8
TASKS = ["a", "b"]
ROUTER_CASES: dict[str, dict] = {
    "lora": dict(method="lora", r=R),
    "moe-lora-p1": dict(method="moe-lora", r=R, k=2),
    "moe-lora-p2": dict(method="moe-lora", r=R, k=4, expert_rank=2),
    "smora-p1": dict(method="smora", r=R, k=2),
    "smora-p2": dict(method="smora", r=R, k=4, expert_rank=2),
    "smora-h-gate": dict(method="smora", r=R, k=2, gate_uses_bias=False),
    "smora-centered": dict(method="smora", r=R, k=2, center_router_input=True),
    "flylora-abs": dict(method="flylora", r=R, k=2),
    "flylora-signed": dict(method="flylora", r=R, k=2, topk_by="signed"),
    "more": dict(method="more", r=R, task_names=TASKS),
    "hydra": dict(method="hydra", r=R, num_experts=3),
}
FOLDABLE = {"lora", "more"}
CASES = sorted(ROUTER_CASES)
TASK_IDS = torch.tensor([0, 1, 1])


def make_layer(case: str, dtype=torch.float64, seed: int = 0) -> RankExpertLinear:
    """A layer with every parameter and routing state random (B non-zero, biases set)."""
    torch.manual_seed(seed)
    base = nn.Linear(IN, OUT).to(dtype).requires_grad_(False)
    layer = RankExpertLinear(base, AdapterConfig(**ROUTER_CASES[case]), name="layer").to(dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in [layer.lora_B, *layer.router.parameters()]:
            param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype))
        for name, buffer in layer.router.named_buffers():
            if name in ("balance_bias", "centering.mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator, dtype=dtype) * 0.3)
    return layer


def tokens(dtype=torch.float64, seed: int = 3) -> torch.Tensor:
    return torch.randn(3, 5, IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(layer: RankExpertLinear, x: torch.Tensor) -> torch.Tensor:
    with routing_context(layer, task_ids=TASK_IDS):
        return layer(x)


# ------------------------------------------------------------------ the formulas (METHODS.md)
def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(scores).scatter(-1, scores.topk(k, dim=-1).indices, 1.0)


def reference_gate(layer: RankExpertLinear, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """g(x) broadcastable to [.., r] (hydra: [.., heads]) from the method's formula."""
    config, router = layer.config, layer.router
    p, method = config.expert_rank, config.method
    if method == "lora":
        return torch.ones_like(z)
    if method in ("moe-lora", "smora", "hydra"):
        routed = x - router.centering.mean if config.center_router_input else x
        logits = routed @ router.gate.weight.T
    if method == "moe-lora":
        probs = torch.softmax(logits, dim=-1)
        mask = _topk_mask(probs, config.k // p)
        gates = probs * mask / (probs * mask).sum(-1, keepdim=True)
        return gates.repeat_interleave(p, dim=-1)
    if method == "smora":
        h = torch.sigmoid(logits)
        q = h + router.balance_bias
        mask = _topk_mask(q, config.k // p)
        value = q if config.gate_uses_bias else h
        gates = (config.k // p) * value * mask / (value * mask).sum(-1, keepdim=True)
        return gates.repeat_interleave(p, dim=-1)
    if method == "flylora":
        shifted = z.detach() + router.balance_bias
        return _topk_mask(shifted.abs() if config.topk_by == "abs" else shifted, config.k)
    if method == "hydra":
        return torch.softmax(logits, dim=-1)
    # more: per task, a straight-through one-hot over the nested prefix lengths
    probs = torch.softmax(
        router.task_embedding @ router.selector.weight.T + router.selector.bias, -1
    )
    choice = probs.argmax(-1)
    straight = F.one_hot(choice, R).to(probs.dtype) + probs - probs.detach()
    prefix = (torch.arange(R)[None, :] <= choice[:, None]).to(probs.dtype)
    factors = (torch.arange(1, R + 1, dtype=probs.dtype) / R) ** 2
    weights = straight.gather(-1, choice[:, None]) * prefix * factors  # [tasks, R]
    return weights[TASK_IDS][:, None, :]


def reference_output(layer: RankExpertLinear, x: torch.Tensor) -> torch.Tensor:
    z = x @ layer.lora_A.T  # [.., r]
    if layer.config.method == "flylora":
        z = z.detach()  # METHODS.md: the frozen-A branch is not differentiated
    gate = reference_gate(layer, x, z)
    if layer.config.method == "hydra":
        heads = layer.lora_B.unflatten(1, (gate.shape[-1], R))  # [out, heads, r]
        delta = torch.einsum("bsh,bsr,ohr->bso", gate, z, heads)
    else:
        delta = (z * gate) @ layer.lora_B.T
    config = layer.config  # s: alpha over the activated rank for smora/moe-lora, else over r
    rank = config.k if config.method in ("smora", "moe-lora") else config.r
    return layer.base_layer(x) + config.alpha / rank * delta


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("case", CASES)
def test_output_and_gradients_follow_the_formula(case):
    layer = make_layer(case)
    x = tokens().requires_grad_(True)
    output = run(layer, x)
    assert output.shape == (3, 5, OUT)
    params = [p for p in layer.parameters() if p.requires_grad]
    expected = reference_output(layer, x)
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10)
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    got = torch.autograd.grad((output * weights).sum(), [x, *params], allow_unused=True)
    want = torch.autograd.grad((expected * weights).sum(), [x, *params], allow_unused=True)
    for ours, theirs in zip(got, want, strict=True):
        if theirs is None:
            assert ours is None or not ours.abs().any()
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_gate_is_zero_outside_the_active_set(case):
    """With W0 = 0 and B = [I; 0] the output's first r entries are s * g * (A x)."""
    layer = make_layer(case)
    config = layer.config
    with torch.no_grad():
        layer.base_layer.weight.zero_()
        layer.base_layer.bias.zero_()
        eye = torch.eye(OUT, R, dtype=torch.float64)
        layer.lora_B.copy_(eye.repeat(1, layer.lora_B.shape[1] // R))
        active = run(layer, tokens())[..., :R] != 0  # [B, S, r]
    per_token = active.sum(-1)
    if config.method in ("moe-lora", "smora", "flylora"):
        assert (per_token == config.k).all()
    elif config.method == "more":  # a prefix of the learned length per task
        expected = torch.tensor(layer.router.chosen_ranks())[TASK_IDS]
        assert (per_token == expected[:, None]).all()
        assert all((row == row.cummin(-1).values).all() for row in active.long().flatten(0, 1))
    else:
        assert per_token.min() == R


@pytest.mark.parametrize("case", CASES)
def test_save_and_load_give_the_same_outputs(case, tmp_path):
    model = attach(tiny_models.llama(), AdapterConfig(**ROUTER_CASES[case]))
    tiny_models.randomize_adapter(model, std=0.3)
    batch = tiny_models.inputs(batch=2)
    with routing_context(model, task_ids=torch.tensor([0, 1])):
        expected = model(**batch).logits
    save_adapter(model, tmp_path / "adapter")
    loaded = load_adapter(tiny_models.llama(), tmp_path / "adapter")
    with routing_context(loaded, task_ids=torch.tensor([0, 1])):
        assert torch.equal(loaded(**batch).logits, expected)


@pytest.mark.parametrize("case", CASES)
def test_disabled_adapter_is_the_base_layer(case):
    layer = make_layer(case)
    x = tokens()
    with adapters_disabled(layer):
        assert torch.equal(run(layer, x), layer.base_layer(x))
    assert not torch.equal(run(layer, x), layer.base_layer(x))


@pytest.mark.parametrize("case", CASES)
def test_fold_equals_unfolded_or_is_refused(case):
    layer = make_layer(case).eval()
    x = tokens()
    if case not in FOLDABLE:
        with pytest.raises(AdapterError, match="cannot be folded"):
            layer.merge()
        return
    task = 1 if case == "more" else None
    with routing_context(layer, task_ids=torch.tensor([task or 0])):
        expected = layer(x)
    layer.merge(task)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    layer.unmerge()
    with routing_context(layer, task_ids=torch.tensor([task or 0])):
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_routing_state_changes_only_at_optimizer_steps_in_training(case):
    layer = make_layer(case)
    state = {name: b.clone() for name, b in layer.router.named_buffers() if name != "pending"}
    state = {n: b for n, b in state.items() if not n.endswith("pending") and n != "counts.seen"}
    run(layer.eval(), tokens())
    on_optimizer_step(layer)
    after_eval = dict(layer.router.named_buffers())
    assert all(torch.equal(after_eval[n], b) for n, b in state.items())  # evaluation: frozen

    run(layer.train(), tokens())
    assert all(torch.equal(dict(layer.router.named_buffers())[n], b) for n, b in state.items())
    counter = layer.router.counter
    counts = counter.pending.clone() if counter is not None else None
    on_optimizer_step(layer)
    if "balance_bias" in state:
        rate = layer.config.effective_balance_rate
        expected = state["balance_bias"] + rate * torch.sign(counts.mean() - counts)
        torch.testing.assert_close(layer.router.balance_bias, expected.to(torch.float64))
    if counts is not None:
        assert counts.sum() == 3 * 5 * layer.config.active_experts  # every token, k/p picks
        assert not counter.pending.any()
    if "centering.mean" in state:
        torch.testing.assert_close(layer.router.centering.mean, tokens().reshape(-1, IN).mean(0))


@pytest.mark.parametrize("case", CASES)
def test_autocast_keeps_adapter_state_float32_and_output_in_autocast_dtype(case):
    layer = make_layer(case, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = run(layer.train(), tokens(dtype=torch.float32))
    assert output.dtype == torch.bfloat16 and torch.isfinite(output.float()).all()
    on_optimizer_step(layer)
    assert all(t.dtype in (torch.float32, torch.long) for t in layer.router.state_dict().values())
    assert all(p.dtype == torch.float32 for p in layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_layer_and_outputs(case):
    first, second = make_layer(case, seed=4), make_layer(case, seed=4)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = tokens()
    assert torch.equal(run(first, x), run(second, x))
    assert torch.equal(run(first, x), run(first, x))
