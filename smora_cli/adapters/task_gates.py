"""MoRE's task gates of sibling layers in one batched autograd node.

A MoRE layer's gate depends on its parameters only (selector and task embeddings), not on the
tokens: per layer a [tasks, in] x [in, R] GEMM, a softmax, a max and the straight-through
prefix, forward and backward. On SmolLM2 that is about 25 small ops per layer and 210 layers
per step (~0.55 ms a layer on one CPU thread, timed in isolation). The
siblings of one block (q, k, v, o, gate, up of a decoder layer) have the same shapes, so the
first of them to run computes the gates of all with one batched GEMM and hands each sibling
its gate (`TaskPrefixRouter.peers`).

Siblings are the adapted layers under the same grandparent module (the decoder block), never
wider: an FSDP unit or an activation-checkpoint region is at least a block, so every batched
parameter is materialised when the first sibling runs and the batched node is recomputed
inside the same region it was built in.

With q = selector(E_t) [R], P = softmax(q), c = argmax P and the forward value
g_t = ((P_c + 1) - P_c) * prefix_t (prefix_t[j] = factor_j for j <= c, else 0):

    G_t = sum_j dL/dg_t[j] prefix_t[j],      dL/dq_t = G_t P_c (onehot(c) - P),

the softmax backward of a gradient G_t that reaches P at c only (straight-through).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed: nothing is sharded
    DTensor = ()


class _SiblingTaskGates(torch.autograd.Function):
    """[L] outputs [T, R]: the task gates of L layers from their (W, b, E) triples."""

    @staticmethod
    def forward(ctx, rank_index: Tensor, factors: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        weight, bias, embedding = (torch.stack(params[i::3]) for i in range(3))
        with torch.autocast(weight.device.type, enabled=False):
            logits = torch.baddbmm(bias.unsqueeze(1), embedding, weight.transpose(1, 2))
            probs = torch.softmax(logits, dim=-1)
            top, choice = probs.max(dim=-1)
            prefix = torch.where(rank_index <= choice[..., None], factors.to(probs), 0.0)
            # (P_c + 1) - P_c: the straight-through gate's forward value as the per-layer
            # path computes it (1 up to one rounding).
            gates = ((top + 1) - top).unsqueeze(-1) * prefix
        ctx.save_for_backward(*params, probs, top, choice, prefix)
        return tuple(gates.unbind(0))

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        *params, probs, top, choice, prefix = ctx.saved_tensors
        weight, embedding = torch.stack(params[0::3]), torch.stack(params[2::3])
        zero = torch.zeros_like(prefix[0])
        grad = torch.stack([zero if g is None else g.to(prefix.dtype) for g in grads])
        with torch.autocast(weight.device.type, enabled=False):
            pulled = (grad * prefix).sum(-1, keepdim=True) * top.unsqueeze(-1)  # G_t P_c
            grad_logits = probs * -pulled
            grad_logits.scatter_add_(-1, choice.unsqueeze(-1), pulled)
            grad_weight = grad_logits.transpose(1, 2).bmm(embedding)
            grad_bias = grad_logits.sum(1)
            grad_embedding = grad_logits.bmm(weight)
        per_layer = []
        for w, b, e in zip(grad_weight, grad_bias, grad_embedding, strict=True):
            per_layer += [w, b, e]
        return (None, None, *per_layer)


def sibling_task_gates(routers: list, rank_index: Tensor, factors: Tensor) -> list[Tensor] | None:
    """[T, R] task gates of each `TaskPrefixRouter` in `routers`, batched; None when their
    parameters are not all plain tensors of one shape (sharded by FSDP outside its unit)."""
    params = []
    for router in routers:
        params += [router.selector.weight, router.selector.bias, router.task_embedding]
    weights = {(p.shape, p.dtype, p.device) for p in params[0::3]}
    embeddings = {(p.shape, p.dtype, p.device) for p in params[2::3]}
    if len(weights) > 1 or len(embeddings) > 1 or any(isinstance(p, DTensor) for p in params):
        return None
    return list(_SiblingTaskGates.apply(rank_index, factors, *params))
