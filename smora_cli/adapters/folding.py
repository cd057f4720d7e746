"""Fold an adapter into its base weights (W <- W0 + Delta W, then drop the adapter layers),
and the fixed-gate pieces `smora merge` builds merges from: deltas, factors, refusals."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.inject import CONFIG_ATTR, adapter_config_of, adapter_layers, attach
from smora_cli.adapters.layer import RankExpertLinear
from smora_cli.adapters.methods import method_of
from smora_cli.adapters.routers import cannot_fold_error
from smora_cli.errors import AdapterError


def task_index(model: nn.Module, task: str | None) -> int | None:
    """Index of `task` in the adapter's task names (None for adapters without tasks)."""
    config = adapter_config_of(model)
    if task is None:
        return None
    if task not in config.task_names:
        known = ", ".join(config.task_names) or "none (this adapter is not task-routed)"
        raise AdapterError(f"task {task!r} is not one this adapter was trained on; known: {known}")
    return config.task_names.index(task)


def fold(model: nn.Module, task: str | None = None) -> nn.Module:
    """Merge the adapter into the base weights and restore the plain base layers, in place.

    Args:
        model: a model with an attached adapter (`attach` or `load_adapter`).
        task: for task-routed adapters (`more`), the task whose rank map to fold.

    Returns:
        `model` with every adapted layer replaced by its updated base layer: the same
        architecture and speed as the base model.

    Raises:
        AdapterError: for token-routed methods (their gate changes per token) or an unknown task.
    """
    task_id = task_index(model, task)
    layers = list(adapter_layers(model))
    for _, layer in layers:  # compute every delta first, so a refusal leaves the model intact
        layer.delta_weight(task_id)
    for _, layer in layers:
        layer.merge(task_id)
    unload(model)
    return model


def unload(model: nn.Module) -> dict[str, RankExpertLinear]:
    """Put the base layers back without merging; returns the detached adapter layers.

    The returned layers still compute `delta_weight`, so several adapters can be loaded onto one
    base model in turn and combined layer by layer (`smora merge`).
    """
    layers = dict(adapter_layers(model))
    for path, layer in layers.items():
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, layer.base_layer)
    delattr(model, CONFIG_ATTR)
    return layers


def check_foldable(method: str) -> None:
    """Refuse a method whose gate depends on the token: its Delta W is no fixed matrix.

    Raises:
        AdapterError: saying how such adapters can be merged instead.
    """
    if not method_of(method).foldable:
        raise cannot_fold_error(method)


@torch.no_grad()
def task_factors(
    layer: RankExpertLinear, task_id: int | None, factor: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(A [r, in], factor * s B diag(g) [out, r]) in float32 for a token-independent gate g
    (`task_id`'s for a task-routed adapter): their product is factor * Delta W exactly, so
    the factors of several adapters, stacked, write their weighted sum as one LoRA."""
    gate = layer.router.static_weights(task_id)
    columns = torch.full((layer.config.r,), layer.scaling * factor)
    if gate is not None:
        columns = columns * gate.float()
    return layer.lora_A.float(), layer.lora_B.float() * columns


@torch.no_grad()
def add_delta(layer: RankExpertLinear, delta: Tensor) -> None:
    """Add Delta W [out, in] (such as a merge of several adapters' deltas) to the base weight
    of a detached adapter layer (`unload`)."""
    weight = layer.base_layer.weight
    delta = delta.T if layer.fan_in_fan_out else delta
    weight.copy_((weight.float() + delta).to(weight.dtype))


@torch.no_grad()
def attach_factors(
    model: nn.Module,
    factors: dict[str, tuple[Tensor, Tensor]],
    base_model_name_or_path: str | None,
) -> None:
    """Attach a plain LoRA holding the given (A [rank, in], B [out, rank]) at each module path,
    scaled by 1, so that each layer's Delta W is exactly B A."""
    rank = next(iter(factors.values()))[0].shape[0]
    config = AdapterConfig(
        method="lora",
        r=rank,
        alpha=float(rank),
        target_modules=list(factors),
        base_model_name_or_path=base_model_name_or_path,
    )
    attach(model, config)
    for path, (a, b) in factors.items():
        layer = model.get_submodule(path)
        layer.lora_A.copy_(a)
        layer.lora_B.copy_(b)
