"""Models sharded by FSDP: adapter tensors gathered whole to be written, put back shard-wise.

Under FSDP1 (`FullyShardedDataParallel` with `use_orig_params=True`, which smora needs because
frozen and trainable parameters share a unit) an adapter parameter is, outside forward, a view
of this rank's slice of its unit's flat parameter: shape `(0,)` on one rank and `(256,)` on
another where the layer holds `(8, 32)`. Module paths gain `_fsdp_wrapped_module`. Under FSDP2
(`fully_shard`) a parameter is a DTensor sharded on dim 0. Buffers are never sharded.

So every rank takes part in gathering (a collective), one FSDP unit at a time: memory peaks at
one unit, not the whole model. Names drop the wrapper segments, so the files equal those of an
unsharded run. Loading copies whole tensors back the same way, each rank keeping its shard.

Checkpoints of a sharded model do not go through `accelerator.save_state`: its FSDP path writes
the whole model, frozen base included, and its `load_state` expects that file back.
`save_training_state` writes what resuming needs besides the adapter: the optimizer state as one
full state dict keyed by parameter name, and Accelerate's per-rank RNG states, step and scaler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from smora_cli.errors import AdapterError

# Path segments that wrappers insert: FSDP1, activation checkpointing, torch.compile.
WRAPPER_SEGMENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})
OPTIMIZER_NAME = "optimizer.bin"  # Accelerate's name for the optimizer state
# FSDP1 marks the original parameters it flattened (torch's FSDP_FLATTENED, a private name).
_FSDP1_FLATTENED = "_fsdp_flattened"


class Entry(NamedTuple):
    """One parameter or persistent buffer: `getattr(module, name)`, read when it is used."""

    module: nn.Module
    name: str
    is_parameter: bool


def clean_name(name: str) -> str:
    """`name` without wrapper segments: the name the unwrapped model gives the same tensor."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_SEGMENTS)


def tensor_entries(module: nn.Module) -> dict[str, Entry]:
    """The parameters and persistent buffers of `module`, keyed as its `state_dict` keys them
    (wrapper segments dropped). `state_dict` is not called: under FSDP it gathers."""
    entries = {}
    for path, sub in module.named_modules():
        prefix = f"{path}." if path else ""
        for name, _ in sub.named_parameters(recurse=False):
            entries[clean_name(prefix + name)] = Entry(sub, name, True)
        for name, _ in sub.named_buffers(recurse=False):
            if name not in sub._non_persistent_buffers_set:
                entries[clean_name(prefix + name)] = Entry(sub, name, False)
    return entries


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP (1 or 2) manages a parameter of `model`, from inside it or around it."""
    return any(_is_dtensor(p) or getattr(p, _FSDP1_FLATTENED, False) for p in model.parameters())


def gather(root: nn.Module, entries: dict[str, Entry]) -> dict[str, Tensor]:
    """Whole CPU copies of the tensors `entries` names, on every rank.

    Args:
        root: the model as FSDP wrapped it (holding every module of `entries`).
        entries: what to gather, from `tensor_entries` or `io.adapter_entries`.

    A collective under FSDP: every rank calls it with the same entries.
    """
    gathered = {}
    for unit, keys in _by_unit(root, entries):
        with _unsharded(unit, writeback=False):
            for key in keys:
                tensor = _whole(_tensor(entries[key]))
                gathered[key] = tensor.detach().to("cpu", copy=True)
    return {key: gathered[key] for key in entries}


def scatter(root: nn.Module, entries: dict[str, Entry], tensors: dict[str, Tensor], source) -> None:
    """Copy whole `tensors` (keyed as `entries`) into the model; each rank keeps its shard.

    A collective under FSDP: every rank calls it with the same entries and tensors.

    Raises:
        AdapterError: `tensors` lacks a key, has an extra one, or a shape differs (naming
            `source`). Keys are checked before anything is copied, shapes unit by unit.
    """
    missing = sorted(set(entries) - set(tensors))
    unexpected = sorted(set(tensors) - set(entries))
    if missing or unexpected:
        raise AdapterError(
            f"{source} does not match this model: missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}"
        )
    with torch.no_grad():
        for unit, keys in _by_unit(root, entries):
            with _unsharded(unit, writeback=True):
                for key in keys:
                    target, value = _tensor(entries[key]), tensors[key]
                    if tuple(value.shape) != tuple(target.shape):
                        raise AdapterError(
                            f"{source}: {key} has shape {list(value.shape)} but this model "
                            f"needs {list(target.shape)}"
                        )
                    _assign(target, value)


def save_training_state(accelerator, model: nn.Module, optimizer, directory: Path) -> None:
    """Write the optimizer state (rank 0, `optimizer.bin`) and Accelerate's RNG states, step
    and scaler (every rank) of a sharded `model` into `directory`. A collective."""
    from accelerate.checkpointing import save_accelerator_state
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    # Full and keyed by parameter name, so it does not depend on how the model was sharded.
    state = get_optimizer_state_dict(
        model,
        _inner(optimizer),
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )
    if accelerator.is_main_process:
        torch.save(state, directory / OPTIMIZER_NAME)
    # Nothing else for Accelerate to save: the model and optimizer are handled above, and smora
    # prepares no scheduler or data loader (its batch plan is a function of the step).
    save_accelerator_state(
        str(directory),
        model_states=[],
        optimizers=[],
        schedulers=[],
        dataloaders=[],
        process_index=accelerator.process_index,
        step=accelerator.step,
        scaler=accelerator.scaler,
    )


def load_training_state(accelerator, model: nn.Module, optimizer, directory: Path) -> None:
    """Read back what `save_training_state` wrote, on every rank. A collective."""
    from accelerate.checkpointing import load_accelerator_state
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = torch.load(directory / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(
        model, _inner(optimizer), state, options=StateDictOptions(full_state_dict=True)
    )
    restored = load_accelerator_state(
        str(directory),
        models=[],
        optimizers=[],
        schedulers=[],
        dataloaders=[],
        process_index=accelerator.process_index,
        scaler=accelerator.scaler,
    )
    accelerator.step = restored.get("step", accelerator.step)


# ------------------------------------------------------------------ FSDP units
def _by_unit(root: nn.Module, entries: dict[str, Entry]) -> Iterator[tuple[nn.Module | None, list]]:
    """(FSDP1 unit, keys of the parameters it holds), outer units before inner ones, then
    (None, every other key): buffers, FSDP2 DTensors, parameters of an unsharded model.

    Outermost units come even when they hold no entry: unsharding one first initialises
    FSDP's root, which a model that has not run forward yet (a resume) still needs.
    """
    owners, units = _fsdp1_units(root)
    held: dict[int, list] = {id(unit): [] for unit, _ in units}
    loose = []
    for key, entry in entries.items():
        unit = owners.get(id(entry.module)) if entry.is_parameter else None
        (loose if unit is None else held[id(unit)]).append(key)
    for unit, outermost in units:
        if outermost or held[id(unit)]:
            yield unit, held[id(unit)]
    yield None, loose


def _fsdp1_units(root: nn.Module) -> tuple[dict[int, nn.Module], list[tuple[nn.Module, bool]]]:
    """{id(module): the innermost FSDP1 unit holding it} and [(unit, outermost)] in pre-order."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return {}, []
    owners, units = {}, []
    stack = [(root, None)]
    while stack:
        module, unit = stack.pop()
        if isinstance(module, FullyShardedDataParallel):
            units.append((module, unit is None))
            unit = module
        if unit is not None:
            owners[id(module)] = unit
        stack.extend((child, unit) for child in reversed(list(module.children())))
    return owners, units


@contextlib.contextmanager
def _unsharded(unit: nn.Module | None, *, writeback: bool):
    """Inside, `unit`'s own parameters (not its nested units') are whole on every rank."""
    if unit is None:
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=writeback):
        yield


# ----------------------------------------------------------------- tensors
def _tensor(entry: Entry) -> Tensor:
    return getattr(entry.module, entry.name)


def _is_dtensor(tensor: Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _whole(tensor: Tensor) -> Tensor:
    """A DTensor's global value (a collective); any other tensor as it is."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def _assign(target: Tensor, value: Tensor) -> None:
    if _is_dtensor(target):
        from torch.distributed.tensor import distribute_tensor

        # Every rank holds the same whole value, so each cuts its own shard: no communication.
        value = value.to(device=target.device_mesh.device_type, dtype=target.dtype)
        value = distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
    target.copy_(value)


def _inner(optimizer):
    """The torch optimizer inside Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
