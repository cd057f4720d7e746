"""Each method's layer output against an independent computation of METHODS.md's formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smora_cli.adapters import AdapterConfig, RankExpertLinear, on_optimizer_step, routing_context
from smora_cli.adapters.routers import RoutingInputs
from smora_cli.adapters.state import aux_losses

IN, OUT = 12, 10


def make_layer(seed: int = 0, dtype=torch.float64, **config) -> RankExpertLinear:
    torch.manual_seed(seed)
    base = nn.Linear(IN, OUT).to(dtype)
    base.requires_grad_(False)
    layer = RankExpertLinear(base, AdapterConfig(**config), name="layer")
    with torch.no_grad():
        layer.lora_B.normal_()
        for param in layer.router.parameters():
            param.normal_()
    return layer


def tokens(batch=3, seq=5, dtype=torch.float64, seed=1):
    return torch.randn(batch, seq, IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def lora_reference(layer, x, gate=None):
    """W0 x + s B diag(g) A x, token by token (gate: [..., r] or None)."""
    z = x @ layer.lora_A.T
    if gate is not None:
        z = z * gate
    return layer.base_layer(x) + layer.scaling * z @ layer.lora_B.T


def test_lora_scaling_and_output():
    layer = make_layer(method="lora", r=4, alpha=8)
    x = tokens()
    assert layer.scaling == 2.0
    torch.testing.assert_close(layer(x), lora_reference(layer, x))
    rs = make_layer(method="lora", r=4, alpha=8, use_rslora=True)
    assert rs.scaling == pytest.approx(8 / math.sqrt(4))


def test_moe_lora_equals_loop_over_experts():
    """E experts of rank p, top-(k/p) == one rank-r LoRA with a block mask (SMoRA's unified view)."""
    layer = make_layer(method="moe-lora", r=8, k=4, expert_rank=2, alpha=4)
    x = tokens()
    experts, active, p = 4, 2, 2
    expected = layer.base_layer(x).clone()
    probs = torch.softmax(x @ layer.router.gate.weight.T, dim=-1)
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            top = probs[b, s].topk(active)
            weights = top.values / top.values.sum()
            for w, e in zip(weights, top.indices, strict=True):
                a_e = layer.lora_A[e * p : (e + 1) * p]
                b_e = layer.lora_B[:, e * p : (e + 1) * p]
                expected[b, s] += w * (4 / 4) * (b_e @ (a_e @ x[b, s]))
    assert experts == layer.config.num_expert_blocks
    torch.testing.assert_close(layer(x), expected)


def test_smora_all_ranks_with_constant_gates_is_lora():
    smora = make_layer(method="smora", r=6, k=6, alpha=3)
    with torch.no_grad():
        smora.router.gate.weight.zero_()  # h = sigmoid(0) = 0.5 for every expert
    lora = make_layer(method="lora", r=6, alpha=3)
    with torch.no_grad():
        lora.lora_A.copy_(smora.lora_A)
        lora.lora_B.copy_(smora.lora_B)
        lora.base_layer.load_state_dict(smora.base_layer.state_dict())
    x = tokens()
    torch.testing.assert_close(smora(x), lora(x))


def test_flylora_sparse_frozen_a():
    layer = make_layer(method="flylora", r=8, k=2, alpha=16)
    nonzeros = max(1, round(IN * 2 / 8))
    assert (layer.lora_A != 0).sum(dim=1).tolist() == [nonzeros] * 8
    assert "lora_A" in dict(layer.named_buffers())
    trainable = [name for name, p in layer.named_parameters() if p.requires_grad]
    assert trainable == ["lora_B"]
    again = make_layer(method="flylora", r=8, k=2, alpha=16)
    other_seed = make_layer(method="flylora", r=8, k=2, alpha=16, a_seed=1)
    assert torch.equal(layer.lora_A.float(), again.lora_A.float())
    assert not torch.equal(layer.lora_A.float(), other_seed.lora_A.float())
    # Entries ~ N(0, (1/r)^2): check the scale over many draws.
    big = RankExpertLinear(nn.Linear(400, 4), AdapterConfig(method="flylora", r=64, k=32))
    values = big.lora_A[big.lora_A != 0]
    assert values.std().item() == pytest.approx(1 / 64, rel=0.1)


def test_flylora_abs_and_signed_differ():
    x = tokens(seq=20)
    outs = [make_layer(method="flylora", r=8, k=3, topk_by=by)(x) for by in ("abs", "signed")]
    assert not torch.allclose(*outs)


@pytest.mark.parametrize("method,rate", [("flylora", 1e-3), ("smora", 1e-5)])
def test_balance_bias_moves_toward_balance_in_training_only(method, rate):
    layer = make_layer(method=method, dtype=torch.float32, r=8, k=2)
    # Skewed input: every token is the same vector, so the same experts win every time.
    x = tokens(dtype=torch.float32)[:1, :1].expand(3, 5, IN).contiguous()
    layer.eval()
    layer(x)
    on_optimizer_step(layer)
    assert torch.count_nonzero(layer.router.balance_bias) == 0
    layer.train()
    layer(x)
    counts = layer.router.counter.pending.clone()
    assert counts.sum() == 2 * 15 and counts.max() == 15  # 15 tokens, 2 of 8 picked each
    on_optimizer_step(layer)
    bias = layer.router.balance_bias
    expected = rate * torch.sign(counts.mean() - counts)
    torch.testing.assert_close(bias, expected)
    assert (bias[counts > 0] < 0).all() and (bias[counts == 0] > 0).all()
    assert torch.count_nonzero(layer.router.counter.pending) == 0


def test_balance_counts_exclude_padding():
    layer = make_layer(method="smora", r=8, k=2, dtype=torch.float32)
    layer.train()
    x = tokens(dtype=torch.float32)
    mask = torch.ones(3, 5)
    mask[0, 2:] = 0
    layer.routing_inputs = RoutingInputs(token_masks=(mask,))
    layer(x)
    assert layer.router.counter.pending.sum().item() == 2 * mask.sum().item()


def test_moe_lora_switch_loss():
    layer = make_layer(method="moe-lora", r=8, k=2, expert_rank=2, dtype=torch.float32)
    layer.train()
    x = tokens(dtype=torch.float32)
    layer(x)
    probs = torch.softmax(x @ layer.router.gate.weight.T, dim=-1).reshape(-1, 4)
    top1 = probs.argmax(-1)
    fraction = torch.bincount(top1, minlength=4).float() / top1.numel()
    expected = 4 * (fraction * probs.mean(0)).sum()
    torch.testing.assert_close(layer.last_aux["balance"], expected)


def more_reference(layer, x, task_ids):
    """Straight-through MoRE written out per example."""
    router = layer.router
    rank = layer.config.r
    probs = torch.softmax(
        router.task_embedding @ router.selector.weight.T + router.selector.bias, -1
    )
    out = layer.base_layer(x).clone()
    c2 = (torch.arange(1, rank + 1, dtype=x.dtype) / rank) ** 2
    for b, task in enumerate(task_ids.tolist()):
        e = int(probs[task].argmax()) + 1
        gate = 1 + probs[task, e - 1] - probs[task, e - 1].detach()
        delta = layer.lora_B[:, :e] @ torch.diag(c2[:e]) @ layer.lora_A[:e]
        out[b] = out[b] + layer.scaling * gate * x[b] @ delta.T
    return out


def test_more_matches_reference_and_folds():
    layer = make_layer(method="more", r=6, alpha=12, task_names=["a", "b", "c"])
    with torch.no_grad():
        layer.router.task_embedding.normal_()  # spread the tasks over different prefixes
    x = tokens(batch=3)
    task_ids = torch.tensor([0, 1, 2])
    layer.routing_inputs = RoutingInputs(task_ids=task_ids)
    assert layer.scaling == 12 / 6
    torch.testing.assert_close(layer(x), more_reference(layer, x, task_ids))
    ranks = layer.router.chosen_ranks()
    assert len(set(ranks)) > 1, "test needs tasks with different ranks"
    for task in range(3):
        weight = layer.base_layer.weight + layer.delta_weight(task)
        folded = F.linear(x[task], weight, layer.base_layer.bias)
        torch.testing.assert_close(folded, layer(x)[task])


def test_more_contrastive_loss_reads_the_first_real_token():
    """CE of cos(first real token, task embeddings) / tau; left padding is skipped."""
    layer = make_layer(method="more", r=4, task_names=["a", "b", "c"])
    layer.train()
    x = tokens(batch=3, seq=5)
    task_ids = torch.tensor([2, 0, 1])
    mask = torch.ones(3, 5)
    mask[0, :2] = 0  # row 0 is left-padded: its first real token is at position 2
    layer.routing_inputs = RoutingInputs(task_ids=task_ids, token_masks=(mask,))
    layer(x)
    first = torch.stack([x[0, 2], x[1, 0], x[2, 0]])
    embeddings = layer.router.task_embedding
    cosine = F.normalize(first, dim=-1) @ F.normalize(embeddings, dim=-1).T
    expected = F.cross_entropy(cosine / layer.config.contrastive_temperature, task_ids)
    torch.testing.assert_close(aux_losses(layer)["contrastive"], expected)
    layer.routing_inputs = RoutingInputs(task_ids=task_ids)  # no mask: position 0
    layer(x)
    assert not torch.allclose(aux_losses(layer)["contrastive"], expected)


def test_more_requires_task_ids():
    layer = make_layer(method="more", r=4, task_names=["a"])
    with pytest.raises(ValueError, match="routes by task"):
        layer(tokens())


def test_hydra_heads():
    layer = make_layer(method="hydra", r=3, num_experts=2, alpha=3)
    x = tokens()
    weights = torch.softmax(x @ layer.router.gate.weight.T, -1)  # [B, S, 2]
    z = x @ layer.lora_A.T
    heads = layer.lora_B.reshape(OUT, 2, 3)
    delta = sum(weights[..., e : e + 1] * (z @ heads[:, e].T) for e in range(2))
    torch.testing.assert_close(layer(x), layer.base_layer(x) + layer.scaling * delta)


def test_conv1d_base_layer_matches_linear():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(OUT, IN)
    linear = nn.Linear(IN, OUT)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    layers = [RankExpertLinear(m, AdapterConfig(method="lora", r=4)) for m in (conv, linear)]
    with torch.no_grad():
        layers[0].lora_B.normal_()
        layers[1].lora_B.copy_(layers[0].lora_B)
        layers[1].lora_A.copy_(layers[0].lora_A)
    x = tokens(dtype=torch.float32)
    torch.testing.assert_close(layers[0](x), layers[1](x))
    layers[0].merge()
    torch.testing.assert_close(layers[0](x), layers[1](x), atol=1e-5, rtol=1e-5)


def test_routing_context_is_scoped():
    model = nn.Sequential(nn.Linear(IN, IN), nn.Linear(IN, OUT))
    from smora_cli.adapters import attach

    attach(
        model, AdapterConfig(method="more", r=4, task_names=["a", "b"], target_modules=["0", "1"])
    )
    x = tokens(dtype=torch.float32)
    with routing_context(model, task_ids=torch.tensor([0, 1, 1])):
        model(x)
    with pytest.raises(ValueError, match="routes by task"):
        model(x)


def test_one_task_id_routes_the_whole_batch():
    model = nn.Sequential(nn.Linear(IN, OUT))
    from smora_cli.adapters import attach

    attach(model, AdapterConfig(method="more", r=4, task_names=["a", "b"], target_modules=["0"]))
    x = tokens(dtype=torch.float32)
    with routing_context(model, task_ids=1):
        one = model(x)
    with routing_context(model, task_ids=torch.tensor([1, 1, 1])):
        every = model(x)
    torch.testing.assert_close(one, every)
