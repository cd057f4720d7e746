"""A hand-written backward for SMoRA's gate: `s * z * expand(g(logits))` in one autograd node.

Autograd through the straightforward ops (sigmoid, bias, top-k, renormalise, scatter, two
multiplies) records about a dozen nodes per layer and keeps several [tokens, E] and
[tokens, r] tensors alive until backward. The gradient only ever reaches the k/p selected
experts of each token, so the backward below works on [tokens, k/p] values and saves the
dense expert gate (for the gradient of `z`), `z` at the selected ranks (for the gradient of
the gate), the chosen indices and the selected gate and sigmoid values.

With q = h + b (or h), h = sigmoid(l), S = sum of q over the selected experts and
c = (k/p) * s, the selected gate is g_e = c q_e / S, hence for a selected j

    dL/dq_j = (c G_j - sum_e G_e g_e) / S,      dL/dl_j = dL/dq_j * h_j (1 - h_j),

where G_e = dL/dg_e = sum over the p ranks of expert e of dL/dout * z. Unselected experts get
no gradient, as with autograd through top-k and scatter. `SigmoidBiasTopKRouter` keeps the
straightforward path (`fused_gate = False`); the tests compare the two.
"""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_float32(tensor: Tensor) -> Tensor:
    """bf16/fp16 values upcast to float32 (float64 stays, for the gradient checks)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def expand_experts(gates: Tensor, expert_rank: int) -> Tensor:
    """[.., E] expert gates -> [.., E*p] rank gates (each gate repeated over its p ranks)."""
    if expert_rank == 1:
        return gates
    return gates.repeat_interleave(expert_rank, dim=-1)


def _dense(chosen: Tensor, selected: Tensor, experts: int) -> Tensor:
    """[.., E] gate: the selected values at the chosen experts, zeros elsewhere."""
    return selected.new_zeros(*selected.shape[:-1], experts).scatter_(-1, chosen, selected)


def gated(z: Tensor, gate: Tensor, expert_rank: int) -> Tensor:
    """z [.., r] times the expert gate [.., E], each gate over its expert's p ranks.

    A view of z as [.., E, p] against the gate as [.., E, 1]: no [.., r] copy of the gate.
    """
    if expert_rank == 1:
        return z * gate
    return (z.unflatten(-1, (-1, expert_rank)) * gate.unsqueeze(-1)).flatten(-2)


def _at_chosen(ranks: Tensor, chosen: Tensor, expert_rank: int) -> Tensor:
    """[.., r] values at the ranks of the chosen experts: [.., k/p] (p = 1) or [.., k/p, p]."""
    if expert_rank == 1:
        return ranks.gather(-1, chosen)
    index = chosen.unsqueeze(-1).expand(*chosen.shape, expert_rank)
    return ranks.unflatten(-1, (-1, expert_rank)).gather(-2, index)


def _selected_gate_grad(grad_out: Tensor, z_chosen: Tensor, chosen: Tensor, p: int) -> Tensor:
    """G [.., k/p]: dL/d(gate) of each selected expert, summed over its p ranks."""
    grad = _at_chosen(grad_out, chosen, p) * z_chosen
    return at_least_float32(grad if p == 1 else grad.sum(-1))


class SigmoidTopKGate(torch.autograd.Function):
    """out = z * expand(g), g = SMoRA's gate of `logits` scaled by `scaling`; also `chosen`."""

    @staticmethod
    def forward(
        ctx,
        z: Tensor,
        logits: Tensor,
        bias: Tensor,
        active: int,
        expert_rank: int,
        uses_bias: bool,
        scaling: float,
    ) -> tuple[Tensor, Tensor]:
        scores = torch.sigmoid(logits)  # h: [.., E]
        top_biased, chosen = (scores + bias).topk(active, dim=-1, sorted=False)  # [.., k/p]
        picked = scores.gather(-1, chosen)  # h at the selected experts
        top = top_biased if uses_bias else picked
        total = top.sum(-1, keepdim=True)
        selected = (top / total).mul_(active * scaling)  # c q_e / S
        gate = _dense(chosen, selected.to(z.dtype), logits.shape[-1])
        z_chosen = _at_chosen(z, chosen, expert_rank)
        ctx.save_for_backward(gate, z_chosen, chosen, selected, picked, total)
        ctx.mark_non_differentiable(chosen)
        ctx.expert_rank, ctx.experts, ctx.coef = expert_rank, gate.shape[-1], active * scaling
        return gated(z, gate, expert_rank), chosen

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_chosen: Tensor | None):
        gate, z_chosen, chosen, selected, picked, total = ctx.saved_tensors
        grad_z = grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_z = gated(grad_out, gate, ctx.expert_rank)
        if ctx.needs_input_grad[1]:
            grad_gate = _selected_gate_grad(grad_out, z_chosen, chosen, ctx.expert_rank)
            grad_q = (ctx.coef * grad_gate - (grad_gate * selected).sum(-1, keepdim=True)) / total
            grad_logits = _dense(chosen, grad_q * picked * (1 - picked), ctx.experts)
        return grad_z, grad_logits, None, None, None, None, None
