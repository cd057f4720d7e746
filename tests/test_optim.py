"""smora train's AdamW (smora_cli/optim.py): parameter groups, and the fused CPU update checked
against AdamW written out by hand."""

import math

import torch
from torch import nn

from smora_cli.optim import adamw


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(2, 4))
        self.lora_B = nn.Parameter(torch.randn(4, 2))
        self.router = nn.Module()
        self.router.weight = nn.Parameter(torch.randn(3, 4))
        self.router.bias = nn.Parameter(torch.randn(3))


class Adapted(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = Layer()


def reference_adamw(param, grads, *, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
    """Loshchilov & Hutter's AdamW, one update per gradient in `grads`."""
    value = param.detach().double().clone()
    m = torch.zeros_like(value)
    v = torch.zeros_like(value)
    for t, grad in enumerate(grads, start=1):
        grad = grad.double()
        value *= 1 - lr * weight_decay
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        m_hat = m / (1 - betas[0] ** t)
        v_hat = v / (1 - betas[1] ** t)
        value -= lr * m_hat / (v_hat.sqrt() + eps)
    return value


def test_groups_give_routers_their_lr_and_decay_matrices_only():
    model = Adapted()
    optimizer = adamw(model, lr=1e-3, router_lr=5e-3, weight_decay=0.1)
    groups = {
        tuple(sorted(name for name, p in model.named_parameters() if p in set(g["params"]))): (
            g["lr"],
            g["weight_decay"],
        )
        for g in optimizer.param_groups
    }
    assert groups == {
        ("layer.lora_A", "layer.lora_B"): (1e-3, 0.1),
        ("layer.router.weight",): (5e-3, 0.1),
        ("layer.router.bias",): (5e-3, 0.0),
    }
    assert all(g["initial_lr"] == g["lr"] for g in optimizer.param_groups)


def test_cpu_updates_are_fused_and_equal_adamw_by_hand():
    torch.manual_seed(0)
    model = Adapted()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = adamw(model, lr=1e-2, router_lr=None, weight_decay=0.1)
    assert all(g["fused"] for g in optimizer.param_groups)
    grads = {name: [torch.randn_like(p) for _ in range(4)] for name, p in start.items()}
    for step in range(4):
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.grad = grads[name][step].clone()
        optimizer.step()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, start[name])
            continue
        decay = 0.1 if param.dim() >= 2 else 0.0
        expected = reference_adamw(start[name], grads[name], lr=1e-2, weight_decay=decay)
        assert torch.allclose(param.double(), expected, atol=1e-6), name
        assert not math.isclose(
            float((param.detach().double() - start[name].double()).abs().max()), 0.0
        )
