"""A hand-written backward for SMoRA's gate: `s * z * expand(g(logits))` in one autograd node.

Autograd through the straightforward ops (sigmoid, bias, top-k, renormalise, scatter, two
multiplies) records about a dozen nodes per layer and keeps several [tokens, E] and
[tokens, r] tensors alive until backward. The gradient only ever reaches the k/p selected
experts of each token, so the backward below works on [tokens, k/p] values and saves just
`z`, the chosen indices and the selected gate and sigmoid values.

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


def _rank_gates(like: Tensor, chosen: Tensor, selected: Tensor, expert_rank: int) -> Tensor:
    """Scatter the selected expert gates into a dense [.., r] rank gate (zeros elsewhere)."""
    experts = like.shape[-1] // expert_rank
    dense = like.new_zeros(*like.shape[:-1], experts).scatter_(-1, chosen, selected)
    return expand_experts(dense, expert_rank)


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
        selected = top * ((active * scaling) / total)  # c q_e / S
        out = z * _rank_gates(z, chosen, selected.to(z.dtype), expert_rank)
        ctx.save_for_backward(z, chosen, selected, picked, total)
        ctx.mark_non_differentiable(chosen)
        ctx.active, ctx.expert_rank, ctx.scaling = active, expert_rank, scaling
        ctx.experts = logits.shape[-1]
        return out, chosen

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_chosen: Tensor | None):
        z, chosen, selected, picked, total = ctx.saved_tensors
        grad_z = grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_z = grad_out * _rank_gates(z, chosen, selected.to(z.dtype), ctx.expert_rank)
        if ctx.needs_input_grad[1]:
            per_rank = grad_out * z  # dL/d(rank gate)
            if ctx.expert_rank > 1:
                per_rank = per_rank.unflatten(-1, (ctx.experts, ctx.expert_rank)).sum(-1)
            grad_gate = at_least_float32(per_rank.gather(-1, chosen))  # G at the selected experts
            coef = ctx.active * ctx.scaling
            grad_q = (coef * grad_gate - (grad_gate * selected).sum(-1, keepdim=True)) / total
            grad_selected = grad_q * picked * (1 - picked)
            grad_logits = grad_selected.new_zeros(*grad_out.shape[:-1], ctx.experts)
            grad_logits.scatter_(-1, chosen, grad_selected)
        return grad_z, grad_logits, None, None, None, None, None
