"""Combining task deltas ΔW_t (one layer at a time) and averaging adapter factors.

Delta-space methods (exact for router-free adapters, where ΔW_t = s B_t diag(g_t) A_t):

    linear           Σ w_t ΔW_t                         (w defaults to 1/n)
    task_arithmetic  λ Σ w_t ΔW_t                       (w defaults to 1)
    ties             λ · TIES(ΔW_t; density): trim each to its top-density magnitudes, elect
                     the sign of the sum per entry, average the entries that agree (disjoint mean)
    dare_linear      λ Σ w_t DARE(ΔW_t): drop entries with probability 1 - density, rescale
                     the rest by 1/density (the expectation is unchanged); seeded
    dare_ties        DARE, then TIES's sign election and disjoint mean

The pruning, sign election and disjoint mean are PEFT's `peft.utils.merge_utils` primitives.
Note PEFT's own `add_weighted_adapter(combination_type="linear")` averages A and B separately,
which is not Σ w_t ΔW_t; here the sum is taken on ΔW itself.
"""

from __future__ import annotations

import torch
from peft.utils.merge_utils import calculate_majority_sign_mask, disjoint_merge, prune
from torch import Tensor


def combine_deltas(
    method: str,
    deltas: list[Tensor],
    weights: list[float],
    densities: list[float],
    *,
    scale: float = 1.0,
    majority_sign: str = "total",
    generator_seed: int = 0,
) -> Tensor:
    """Merge one layer's task deltas [out, in] with a delta-space method."""
    if method in ("linear", "task_arithmetic"):
        merged = sum(w * d for w, d in zip(weights, deltas, strict=True))
        return merged if method == "linear" else scale * merged
    with torch.random.fork_rng(devices=[]):  # DARE draws its masks from the global RNG
        torch.manual_seed(generator_seed)
        if method in ("dare_linear", "dare_ties"):
            pruned = [
                prune(d, p, method="random", rescale=True)
                for d, p in zip(deltas, densities, strict=True)
            ]
        elif method == "ties":
            pruned = [
                prune(d, p, method="magnitude") for d, p in zip(deltas, densities, strict=True)
            ]
        else:
            raise ValueError(f"unknown delta merge method {method!r}")
    stacked = torch.stack(pruned)  # [tasks, out, in]
    weighted = stacked * torch.tensor(weights, dtype=stacked.dtype).view(-1, 1, 1)
    if method == "dare_linear":
        return scale * weighted.sum(0)
    mask = calculate_majority_sign_mask(stacked, method=majority_sign)
    return scale * disjoint_merge(weighted, mask)


def mean_factors(states: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """Weighted mean of every adapter tensor (A, B, routers, balance biases): FlyLoRA's merge.

    The result keeps the routing machinery, so token-routed adapters stay routed.
    """
    total = sum(weights)
    return {
        key: sum(w * state[key].float() for w, state in zip(weights, states, strict=True))
        .div(total)
        .to(states[0][key].dtype)
        for key in states[0]
    }
