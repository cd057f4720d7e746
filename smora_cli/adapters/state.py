"""Adapter state across steps: balance updates, auxiliary losses, router statistics, rank maps."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.inject import adapter_config_of, adapter_layers
from smora_cli.adapters.routers import (
    TaskPrefixRouter,
    apply_step_counts,
    contrastive_losses,
)

# Which config field weighs each auxiliary loss a router can return.
AUX_COEFFICIENTS = {"balance": "aux_loss_coef", "contrastive": "contrastive_coef"}


@torch.no_grad()
def on_optimizer_step(model: nn.Module) -> None:
    """Apply this optimizer step's routing updates: balance biases and router input means.

    Counts (and input sums) gathered over every micro-batch since the last call are summed
    across processes in one all-reduce, so gradient accumulation and DDP see the same state
    on every rank. Call it right after `optimizer.step()`, on every process.
    """
    routers = [layer.router for _, layer in adapter_layers(model)]
    counted = [router for router in routers if router.counter is not None]
    centered = [router for router in routers if router.centering is not None]
    pending = [r.counter.pending for r in counted] + [r.centering.pending for r in centered]
    if not pending:
        return
    flat = torch.cat(pending)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)
    parts = flat.split([t.numel() for t in pending])
    counts, sums = list(parts[: len(counted)]), parts[len(counted) :]
    if counted:  # every layer's counts in a few batched ops, not several ops per layer
        apply_step_counts(counted, counts)
        torch._foreach_add_([router.counter.seen for router in counted], counts)
        torch._foreach_zero_([router.counter.pending for router in counted])
    for router, step_sums in zip(centered, sums, strict=True):
        router.centering.apply_step_sums(step_sums)
        router.centering.pending.zero_()


def aux_losses(model: nn.Module) -> dict[str, Tensor]:
    """Each auxiliary loss of the last forward, averaged over the layers that returned it
    (MoRE's contrastive loss: over the layers that routed a training batch)."""
    sums: dict[str, list[Tensor]] = {}
    contrastive = []
    for _, layer in adapter_layers(model):
        for name, value in layer.last_aux.items():
            sums.setdefault(name, []).append(value)
        router = layer.router
        if isinstance(router, TaskPrefixRouter) and router.contrastive_inputs is not None:
            contrastive.append(router)
    losses = {name: torch.stack(values).mean() for name, values in sums.items()}
    if contrastive:
        losses["contrastive"] = contrastive_losses(contrastive).mean()
    return losses


def weighted_aux_loss(losses: dict[str, Tensor], config: AdapterConfig) -> Tensor | None:
    """Sum of auxiliary losses times their config coefficients, or None when there are none."""
    terms = [getattr(config, AUX_COEFFICIENTS[name]) * value for name, value in losses.items()]
    return torch.stack(terms).sum() if terms else None


def clear_aux(model: nn.Module) -> None:
    """Drop references to the last forward's auxiliary losses (and their graphs)."""
    for _, layer in adapter_layers(model):
        layer.last_aux = {}
        if isinstance(layer.router, TaskPrefixRouter):
            layer.router.clear_forward_state()


def router_stats(model: nn.Module, *, reset: bool = True) -> dict[str, dict[str, float]]:
    """Expert load since the last call, per adapted layer with a token router.

    Returns:
        {layer path: {"max_load": largest expert share, "min_load": smallest share,
        "entropy": normalised entropy of the load (1 = perfectly balanced)}}.
    """
    stats = {}
    for path, layer in adapter_layers(model):
        counter = layer.router.counter
        if counter is None or counter.seen.sum() <= 0:
            continue
        load = counter.seen / counter.seen.sum()
        entropy = -(load * load.clamp_min(1e-12).log()).sum() / math.log(load.numel())
        stats[path] = {
            "max_load": float(load.max()),
            "min_load": float(load.min()),
            "entropy": float(entropy),
        }
        if reset:
            counter.seen.zero_()
    return stats


def rank_map(model: nn.Module) -> dict[str, dict[str, int]]:
    """MoRE's learned rank per task and layer: {task: {layer path: e*}}."""
    config = adapter_config_of(model)
    result: dict[str, dict[str, int]] = {task: {} for task in config.task_names}
    for path, layer in adapter_layers(model):
        if isinstance(layer.router, TaskPrefixRouter):
            for task, rank in zip(config.task_names, layer.router.chosen_ranks(), strict=True):
                result[task][path] = rank
    return result
