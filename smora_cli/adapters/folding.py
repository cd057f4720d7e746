"""Fold an adapter into its base weights: W <- W0 + Delta W, then drop the adapter layers."""

from __future__ import annotations

from torch import nn

from smora_cli.adapters.inject import CONFIG_ATTR, adapter_config_of, adapter_layers
from smora_cli.adapters.layer import RankExpertLinear
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
