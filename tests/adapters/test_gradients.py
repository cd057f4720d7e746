"""Gradients reach exactly what each method trains, with the right values."""

import pytest
import torch
from torch import nn

from smora_cli.adapters import AdapterConfig, RankExpertLinear
from smora_cli.adapters.routers import RoutingInputs
from smora_cli.adapters.state import aux_losses

TRAINED = {
    "lora": ({"method": "lora", "r": 4}, {"lora_A", "lora_B"}),
    "moe-lora": (
        {"method": "moe-lora", "r": 8, "k": 4, "expert_rank": 2},
        {"lora_A", "lora_B", "router.gate.weight"},
    ),
    "smora": ({"method": "smora", "r": 8, "k": 2}, {"lora_A", "lora_B", "router.gate.weight"}),
    "flylora": ({"method": "flylora", "r": 8, "k": 2}, {"lora_B"}),
    "more": (
        {"method": "more", "r": 4, "task_names": ["a", "b"]},
        {
            "lora_A",
            "lora_B",
            "router.task_embedding",
            "router.selector.weight",
            "router.selector.bias",
        },
    ),
    "hydra": ({"method": "hydra", "r": 4}, {"lora_A", "lora_B", "router.gate.weight"}),
}


def layer_for(config: dict, seed=0) -> RankExpertLinear:
    torch.manual_seed(seed)
    base = nn.Linear(6, 5).double()
    base.requires_grad_(False)
    layer = RankExpertLinear(base, AdapterConfig(**config), name="l").double()
    with torch.no_grad():
        layer.lora_B.normal_()
        if "task_embedding" in dict(layer.router.named_parameters()):
            layer.router.task_embedding.normal_()
    layer.routing_inputs = RoutingInputs(task_ids=torch.tensor([0, 1]))
    return layer


def inputs():
    x = torch.randn(2, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return x.requires_grad_(True)


@pytest.mark.parametrize("method", sorted(TRAINED))
def test_gradients_reach_exactly_the_trained_parameters(method):
    config, expected = TRAINED[method]
    layer = layer_for(config)
    layer.train()
    out = layer(inputs())
    loss = (out**2).sum() + sum(aux_losses(layer).values(), torch.zeros((), dtype=out.dtype))
    loss.backward()
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == expected
    with_grad = {
        n for n, p in layer.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad == expected
    assert layer.base_layer.weight.grad is None


@pytest.mark.parametrize("method", ["lora", "moe-lora", "smora", "flylora", "hydra"])
def test_gradients_match_finite_differences(method):
    """Autograd vs central differences (routing choices are locally constant)."""
    config, trained = TRAINED[method]
    layer = layer_for(config)
    layer.eval()  # fixed routing inputs, no dropout; biases do not move in eval
    x = inputs().detach()
    params = dict(layer.named_parameters())

    def loss():
        return (layer(x) ** 3).sum()

    loss().backward()
    eps = 1e-6
    for name in sorted(trained):
        param = params[name]
        numeric = torch.zeros_like(param)
        with torch.no_grad():
            for index in range(param.numel()):
                flat = param.view(-1)
                original = flat[index].item()
                flat[index] = original + eps
                up = loss()
                flat[index] = original - eps
                down = loss()
                flat[index] = original
                numeric.view(-1)[index] = (up - down) / (2 * eps)
        torch.testing.assert_close(param.grad, numeric, rtol=1e-5, atol=1e-6, msg=name)


def test_flylora_input_gradient_comes_from_the_base_path_only():
    """FlyLoRA does not differentiate through the frozen A (METHODS.md speed trick)."""
    layer = layer_for(TRAINED["flylora"][0])
    x = inputs()
    layer(x).sum().backward()
    expected = layer.base_layer.weight.sum(0).expand_as(x)
    torch.testing.assert_close(x.grad, expected)


def test_more_straight_through_gradient():
    """The selector learns through g = onehot(e*) + p - stopgrad(p), every training step."""
    config, _ = TRAINED["more"]
    layer = layer_for(config)
    layer.train()
    x = inputs()
    task_ids = torch.tensor([0, 1])
    (layer(x) ** 2).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.router.named_parameters()}

    router = layer.router
    weight = router.selector.weight.detach().clone().requires_grad_(True)
    bias = router.selector.bias.detach().clone().requires_grad_(True)
    rank = 4
    probs = torch.softmax(router.task_embedding.detach() @ weight.T + bias, -1)
    c2 = (torch.arange(1, rank + 1, dtype=x.dtype) / rank) ** 2
    total = 0
    for b, task in enumerate(task_ids.tolist()):
        e = int(probs[task].argmax()) + 1
        gate = 1 + probs[task, e - 1] - probs[task, e - 1].detach()
        delta = layer.lora_B[:, :e].detach() @ torch.diag(c2[:e]) @ layer.lora_A[:e].detach()
        y = layer.base_layer(x[b].detach()) + layer.scaling * gate * x[b].detach() @ delta.T
        total = total + (y**2).sum()
    total.backward()
    torch.testing.assert_close(got["selector.weight"], weight.grad)
    torch.testing.assert_close(got["selector.bias"], bias.grad)
    assert weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["moe-lora", "smora", "hydra"])
def test_fused_projection_equals_separate_matmuls(method):
    """The optimised [A; W_gate] projection gives the straightforward path's numbers."""
    config, trained = TRAINED[method]
    results = []
    for fused in (True, False):
        layer = layer_for(config)
        layer.fused_projection = fused
        layer.train()
        x = inputs()
        out = layer(x)
        (out**3).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
        results.append((out.detach(), x.grad.clone(), grads, layer.router.counter))
    (out_f, dx_f, grads_f, _), (out_s, dx_s, grads_s, _) = results
    torch.testing.assert_close(out_f, out_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx_f, dx_s, rtol=1e-10, atol=1e-12)
    assert grads_f.keys() == grads_s.keys() == trained
    for name in trained:
        torch.testing.assert_close(grads_f[name], grads_s[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["moe-lora", "smora"])
def test_fused_projection_saves_no_copy_of_its_weight(method):
    """[A; W_gate] is rebuilt in backward instead of held from forward (what the matmul would
    save otherwise): nothing of its shape is saved for backward, and the gradients, also
    through a non-reentrant checkpoint, are those of the separate matmuls."""
    config, trained = TRAINED[method]
    layer = layer_for(config)
    layer.train()
    fused_rows = layer.lora_A.shape[0] + layer.router.gate_weight.shape[0]
    saved_shapes = []

    def pack(tensor):
        saved_shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(inputs())
    assert saved_shapes, "the outer hook saw no saved tensor at all"
    assert (fused_rows, 6) not in saved_shapes and (6, fused_rows) not in saved_shapes

    results = []
    for fused, checkpointed in ((False, False), (True, True)):
        layer = layer_for(config)
        layer.fused_projection = fused
        layer.train()
        x = inputs()
        if checkpointed:
            out = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
        else:
            out = layer(x)
        (out**3).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
        results.append((out.detach(), x.grad.clone(), grads))
    (out_s, dx_s, grads_s), (out_c, dx_c, grads_c) = results
    torch.testing.assert_close(out_c, out_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx_c, dx_s, rtol=1e-10, atol=1e-12)
    for name in trained:
        torch.testing.assert_close(grads_c[name], grads_s[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("expert_rank", [1, 2])
@pytest.mark.parametrize("gate_uses_bias", [True, False])
def test_fused_smora_gate_equals_autograd_through_the_ops(expert_rank, gate_uses_bias):
    """SMoRA's hand-written gate backward gives autograd's numbers, balance bias included."""
    config = {"method": "smora", "r": 8, "k": 4, "expert_rank": expert_rank}
    results = []
    for fused in (True, False):
        layer = layer_for({**config, "gate_uses_bias": gate_uses_bias})
        layer.router.fused_gate = fused
        with torch.no_grad():  # a bias large enough to change which experts win
            layer.router.balance_bias.copy_(torch.linspace(-0.3, 0.3, 8 // expert_rank))
        layer.train()
        x = inputs()
        out = layer(x)
        (out**3).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
        results.append((out.detach(), x.grad.clone(), grads, layer.router.counter.pending.clone()))
    (out_f, dx_f, grads_f, counts_f), (out_s, dx_s, grads_s, counts_s) = results
    torch.testing.assert_close(out_f, out_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx_f, dx_s, rtol=1e-10, atol=1e-12)
    assert grads_f.keys() == grads_s.keys() == TRAINED["smora"][1]
    for name in grads_f:
        torch.testing.assert_close(grads_f[name], grads_s[name], rtol=1e-10, atol=1e-12)
    assert grads_f["router.gate.weight"].abs().sum() > 0
    torch.testing.assert_close(counts_f, counts_s)
