"""Attach rank-expert adapters to any `transformers` (or plain torch) model.

Targets are chosen as PEFT does: a list of names matches a module path exactly or as its
last dotted components, a string is a regular expression matched against the full path, and
`all-linear` takes every linear layer except output and classification heads.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smora_cli.adapters.config import TARGET_ALL_LINEAR, AdapterConfig
from smora_cli.adapters.layer import RankExpertLinear, linear_shape
from smora_cli.adapters.routers import RoutingInputs, TaskPrefixRouter
from smora_cli.errors import AdapterError

CONFIG_ATTR = "smora_config"
# Heads that `all-linear` leaves alone: they map to vocabularies or labels, not features.
HEAD_NAMES = ("lm_head", "classifier", "score", "qa_outputs", "pooler", "cls", "task_heads")


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, RankExpertLinear]]:
    """(module path, layer) for every adapted layer of `model`."""
    for path, module in model.named_modules():
        if isinstance(module, RankExpertLinear):
            yield path, module


def adapter_config_of(model: nn.Module) -> AdapterConfig:
    """The `AdapterConfig` that `attach` recorded on `model`."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise AdapterError("this model has no smora adapter attached")
    return config


def _matches(path: str, targets: str | list[str]) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def _is_head(model: nn.Module, path: str, module: nn.Module) -> bool:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and module is output:
        return True
    return any(part in HEAD_NAMES for part in path.split("."))


def find_targets(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Module paths `config.target_modules` selects (and `exclude_modules` does not).

    Raises:
        AdapterError: when nothing matches, or a match is not a linear layer.
    """
    targets, chosen = config.target_modules, []
    for path, module in model.named_modules():
        if not path or isinstance(module, RankExpertLinear) or ".base_layer" in f".{path}":
            continue
        if config.exclude_modules and _matches(path, config.exclude_modules):
            continue
        if targets == TARGET_ALL_LINEAR:
            if linear_shape(module) is not None and not _is_head(model, path, module):
                chosen.append(path)
        elif _matches(path, targets):
            if linear_shape(module) is None:
                raise AdapterError(
                    f"target module {path!r} is a {type(module).__name__}; smora "
                    "adapts nn.Linear and Conv1D layers only"
                )
            chosen.append(path)
    if not chosen:
        names = sorted(
            {p.rsplit(".", 1)[-1] for p, m in model.named_modules() if linear_shape(m) is not None}
        )
        raise AdapterError(
            f"target_modules={targets!r} matched no module; linear layers in "
            f"this model are named: {', '.join(names) or 'none'}"
        )
    return chosen


def attach(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Freeze `model` and wrap its target layers in `RankExpertLinear`, in place.

    Args:
        model: any torch model, typically a `transformers.PreTrainedModel`.
        config: the adapter to attach.

    Returns:
        The same model object, with `model.smora_config` set.

    Raises:
        AdapterError: if the model already has an adapter or no target matches.
    """
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise AdapterError("this model already has a smora adapter; load a fresh base model")
    paths = find_targets(model, config)
    model.requires_grad_(False)
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, RankExpertLinear(getattr(parent, child), config, name=path))
    _link_task_siblings(model)
    setattr(model, CONFIG_ATTR, config)
    return model


def _link_task_siblings(model: nn.Module) -> None:
    """Give each MoRE router the same-width MoRE routers of its block (task_gates.py).

    A block is the layer's grandparent module (`model.layers.3` for `...3.self_attn.q_proj`
    and `...3.mlp.up_proj`): FSDP units and checkpointed regions are never narrower.
    """
    blocks: dict[tuple, list[TaskPrefixRouter]] = {}
    for path, layer in adapter_layers(model):
        if isinstance(layer.router, TaskPrefixRouter) and path.count(".") >= 2:
            key = (path.rsplit(".", 2)[0], layer.in_features)
            blocks.setdefault(key, []).append(layer.router)
    for siblings in blocks.values():
        for router in siblings:
            router.peers = siblings


@contextlib.contextmanager
def routing_context(
    model: nn.Module,
    *,
    task_ids: Tensor | int | None = None,
    token_masks: tuple[Tensor, ...] | Tensor | None = None,
) -> Iterator[None]:
    """Give every adapter layer the routing inputs of one call, removed again on exit.

    Args:
        task_ids: [batch] task indices (or one int for the whole batch) for task-routed
            adapters (`more`).
        token_masks: [batch, seq] masks of real tokens, so that padding does not count
            towards expert load; several masks for encoder-decoder models.

    Wrap forward and backward in it when activation checkpointing recomputes the forward.
    """
    layers = [layer for _, layer in adapter_layers(model)]
    if isinstance(token_masks, Tensor):
        token_masks = (token_masks,)
    if isinstance(task_ids, int) and token_masks:
        task_ids = torch.full((token_masks[0].shape[0],), task_ids, dtype=torch.long)
    elif isinstance(task_ids, int):
        task_ids = torch.tensor([task_ids])
    inputs = RoutingInputs(task_ids=task_ids, token_masks=tuple(token_masks or ()))
    previous = [layer.routing_inputs for layer in layers]
    for layer in layers:
        layer.routing_inputs = inputs
    try:
        yield
    finally:
        for layer, before in zip(layers, previous, strict=True):
            layer.routing_inputs = before


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run `model` as its base model (adapter branches skipped)."""
    layers = [layer for _, layer in adapter_layers(model)]
    for layer in layers:
        layer.disabled = True
    try:
        yield
    finally:
        for layer in layers:
            layer.disabled = False


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter budget of an adapted model.

    Attributes:
        total: every parameter of the model.
        trainable: parameters with requires_grad (adapter, routers, task heads).
        adapter: trainable parameters inside adapter layers.
        activated: adapter weights one token touches: the k active ranks of A and B (all of a
            frozen FlyLoRA A, which routes), the router, and every rank of task-level methods.
    """

    total: int
    trainable: int
    adapter: int
    activated: int


def _activated(layer: RankExpertLinear) -> int:
    active = layer.config.activated_rank
    router = sum(p.numel() for p in layer.router.parameters())
    b_per_rank = layer.lora_B.shape[0] * layer.router.heads
    if not layer.router.trains_a:  # FlyLoRA: the whole frozen A routes every token
        return int(torch.count_nonzero(layer.lora_A)) + active * b_per_rank
    return active * (layer.lora_A.shape[1] + b_per_rank) + router


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Total, trainable, adapter-trainable and per-token activated adapter parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = [layer for _, layer in adapter_layers(model)]
    adapter = sum(
        p.numel()
        for layer in layers
        for n, p in layer.named_parameters()
        if p.requires_grad and not n.startswith("base_layer.")
    )
    return ParameterCounts(total, trainable, adapter, sum(_activated(layer) for layer in layers))
