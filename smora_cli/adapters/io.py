"""Adapter files: `adapter_config.json` + `adapter_model.safetensors`, keyed as PEFT does.

Tensor keys are `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`, plus
`.router.<name>` for routing state (router weights, balance biases, task embeddings).
A `lora` adapter is written as a plain PEFT `LoraConfig`, so `peft.PeftModel.from_pretrained`
loads it; every other method carries `peft_type: SMORA`, which PEFT refuses and smora reads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from smora_cli import __version__
from smora_cli.adapters.config import METHODS, AdapterConfig
from smora_cli.adapters.fingerprint import METADATA_KEY as FINGERPRINT_KEY
from smora_cli.adapters.fingerprint import base_fingerprint
from smora_cli.adapters.inject import adapter_config_of, adapter_layers, attach
from smora_cli.adapters.peft_classifier import head_modules, is_peft_classifier
from smora_cli.adapters.routers import TaskPrefixRouter
from smora_cli.distributed import Entry, clean_name, gather, is_sharded, scatter, tensor_entries
from smora_cli.errors import AdapterError
from smora_cli.utils.fs import atomic_directory

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
SMORA_PEFT_TYPE = "SMORA"
# Our field names -> PEFT's, where PEFT has one.
PEFT_NAMES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
# PEFT LoRA features smora does not implement: a PEFT adapter using one is refused.
UNSUPPORTED_PEFT = {
    "use_dora": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "lora_bias": False,
    "layers_to_transform": None,
    "modules_to_save": None,
    "bias": "none",
}


def _tensor_key(layer_path: str, name: str) -> str:
    if name in ("lora_A", "lora_B"):
        name += ".weight"
    return f"{PREFIX}{layer_path}.{name}"


def _live_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Adapter parameters and persistent buffers of `model`, PEFT-keyed, sharing storage."""
    state = {}
    for path, layer in adapter_layers(model):
        for name, tensor in layer.state_dict().items():
            if not name.startswith("base_layer."):
                state[_tensor_key(path, name)] = tensor
    return state


def adapter_state_dict(model: nn.Module, *, root: nn.Module | None = None) -> dict[str, Tensor]:
    """Every adapter tensor of `model` (parameters and persistent buffers), PEFT-keyed.

    Args:
        root: the FSDP-wrapped model holding `model`, when FSDP shards it: the tensors are then
            gathered whole onto the CPU of every rank (a collective: call it on every rank).

    Raises:
        AdapterError: FSDP shards `model` and `root` is not given.
    """
    if root is not None:
        return gather(root, adapter_entries(model))
    _refuse_sharded(model)
    return {key: tensor.detach().contiguous() for key, tensor in _live_tensors(model).items()}


def adapter_entries(model: nn.Module) -> dict[str, Entry]:
    """Where each adapter tensor of `model` lives, PEFT-keyed (FSDP wrapper names dropped)."""
    entries = {}
    for path, layer in adapter_layers(model):
        for name, entry in tensor_entries(layer).items():
            if not name.startswith("base_layer."):
                entries[_tensor_key(clean_name(path), name)] = entry
    return entries


def _refuse_sharded(model: nn.Module) -> None:
    # Each rank holds slices of FSDP's flat parameters: never write or load those as tensors.
    if is_sharded(model):
        raise AdapterError(
            "FSDP shards this model's adapter: pass root=<the FSDP-wrapped model> and call "
            "this on every rank, so that whole tensors are gathered or loaded"
        )


def config_to_file(model: nn.Module) -> dict[str, Any]:
    """The adapter_config.json content for the adapter on `model`."""
    config = adapter_config_of(model)
    layers = list(adapter_layers(model))
    data = {PEFT_NAMES.get(k, k): v for k, v in config.to_dict().items()}
    # Exact module paths, so PEFT and smora adapt precisely these layers on reload.
    data["target_modules"] = [clean_name(path) for path, _ in layers]
    data["exclude_modules"] = None
    if config.method != "lora":
        return {"peft_type": SMORA_PEFT_TYPE, "smora_version": __version__, **data}
    return _peft_lora_config(
        config,
        target_modules=data["target_modules"],
        fan_in_fan_out=any(layer.fan_in_fan_out for _, layer in layers),
        task_type=peft_task_type(model),
    )


def _peft_lora_config(config: AdapterConfig, **fields) -> dict[str, Any]:
    """A plain PEFT LoraConfig (with `peft_version` and `task_type`, so that
    `AutoPeftModelFor*.from_pretrained(adapter_dir)` finds the base model's class)."""
    from peft import LoraConfig

    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        use_rslora=config.use_rslora,
        bias="none",
        inference_mode=True,
        base_model_name_or_path=config.base_model_name_or_path,
        **fields,
    )
    return {k: sorted(v) if isinstance(v, set) else v for k, v in lora.to_dict().items()}


def peft_task_type(model: nn.Module) -> str | None:
    """PEFT's task type of a `transformers` model: which AutoPeftModel class reloads it."""
    name = type(model).__name__
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "CAUSAL_LM"
    if name.endswith("Model"):  # a bare encoder (classifier kind: smora keeps the heads)
        return "FEATURE_EXTRACTION"
    return None


def write_adapter(
    model: nn.Module, directory: str | os.PathLike, *, tensors: dict[str, Tensor] | None = None
) -> None:
    """Write the adapter files into an existing directory (see `save_adapter`).

    Args:
        tensors: the adapter's tensors when gathered already (`adapter_state_dict(root=...)`
            under FSDP); by default read from `model`.
    """
    directory = Path(directory)
    (directory / CONFIG_NAME).write_text(json.dumps(config_to_file(model), indent=2) + "\n")
    metadata = {"format": "pt", "smora_version": __version__}
    # No process holds the base weights of a sharded model whole.
    fingerprint = None if is_sharded(model) else base_fingerprint(model)
    if fingerprint is not None:
        metadata[FINGERPRINT_KEY] = fingerprint
    save_file(
        adapter_state_dict(model) if tensors is None else tensors,
        str(directory / WEIGHTS_NAME),
        metadata=metadata,
    )


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Save the adapter on `model` to `directory`, atomically (complete or not at all).

    Returns:
        The directory written.
    """
    with atomic_directory(directory) as tmp:
        write_adapter(model, tmp)
    return Path(directory)


def read_adapter_config(directory: str | os.PathLike) -> AdapterConfig:
    """Parse and validate `directory/adapter_config.json` without touching any model.

    Raises:
        AdapterError: missing directory or files, invalid JSON, unknown peft_type or method.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise AdapterError(f"adapter directory {directory} does not exist")
    if not config_path.is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise AdapterError(
            f"{directory} is not an adapter directory: it needs {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (as written by `smora train` or PEFT)"
        )
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{config_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise AdapterError(f"{config_path} must hold a JSON object")
    peft_type = data.get("peft_type")
    if peft_type == "LORA":
        return _config_from_peft_lora(data, config_path)
    if peft_type != SMORA_PEFT_TYPE:
        raise AdapterError(
            f"{config_path}: peft_type {peft_type!r} is not an adapter smora can "
            "load (LORA or SMORA)"
        )
    if data.get("method") not in METHODS:
        raise AdapterError(
            f"{config_path}: unknown method {data.get('method')!r}; known: {', '.join(METHODS)}"
            + _newer_writer(data)
        )
    fields = {
        key: value for key, value in data.items() if key not in ("peft_type", "smora_version")
    }
    fields = {
        next((k for k, v in PEFT_NAMES.items() if v == key), key): value
        for key, value in fields.items()
    }
    try:
        return AdapterConfig.from_dict(fields)
    except (AdapterError, TypeError) as e:
        raise AdapterError(f"{config_path}: {e}{_newer_writer(data)}") from e


def _newer_writer(data: dict[str, Any]) -> str:
    """Why an adapter has keys or a method this smora does not know: a newer smora wrote it."""
    written = data.get("smora_version")
    if written is None or _release(written) <= _release(__version__):
        return ""
    return (
        f"; it was written by smora {written}, newer than this smora {__version__}: "
        "upgrade smora to load it"
    )


def _release(version: Any) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; () when it has none."""
    match = re.match(r"\d+(\.\d+)*", str(version))
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _config_from_peft_lora(data: dict[str, Any], config_path: Path) -> AdapterConfig:
    for key, neutral in UNSUPPORTED_PEFT.items():
        if key == "modules_to_save" and head_modules(data):
            continue  # a SEQ_CLS adapter's head: peft_classifier.py loads it
        value = data.get(key, neutral)
        if value and value != neutral:
            raise AdapterError(
                f"{config_path}: PEFT option {key}={data[key]!r} is not supported by smora"
            )
    try:
        return AdapterConfig(
            method="lora",
            r=data["r"],
            alpha=data.get("lora_alpha", 8),
            dropout=data.get("lora_dropout", 0.0),
            target_modules=data["target_modules"],
            exclude_modules=data.get("exclude_modules"),
            use_rslora=data.get("use_rslora", False),
            base_model_name_or_path=data.get("base_model_name_or_path"),
        )
    except KeyError as e:
        raise AdapterError(f"{config_path}: missing key {e.args[0]!r}") from e


def load_adapter(
    model: nn.Module, directory: str | os.PathLike, *, trainable: bool = False
) -> nn.Module:
    """Attach the adapter saved in `directory` to a fresh base `model` and load its weights.

    Args:
        model: the base model the adapter was trained on (no adapter attached yet).
        directory: an adapter directory written by smora (or a PEFT LoRA adapter).
        trainable: keep adapter parameters trainable (to continue training).

    Returns:
        `model`, adapted in place.

    Raises:
        AdapterError: unreadable files, or weights that do not fit this model.
    """
    directory = Path(directory)
    config = read_adapter_config(directory)
    if is_peft_classifier(directory):
        raise AdapterError(
            f"adapter {directory} is a PEFT sequence-classification adapter (task_type SEQ_CLS, "
            "with its saved head): `smora eval --adapter` scores it as a classifier; it cannot "
            "be used here"
        )
    attach_loaded(model, config, read_tensors(directory), directory, trainable=trainable)
    return model


def read_tensors(directory: Path) -> dict[str, Tensor]:
    """The tensors of `directory/adapter_model.safetensors`."""
    try:
        return load_file(str(directory / WEIGHTS_NAME))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterError(f"{directory / WEIGHTS_NAME} is corrupt or unreadable: {e}") from e


def attach_loaded(
    model: nn.Module,
    config: AdapterConfig,
    tensors: dict[str, Tensor],
    directory: Path,
    *,
    trainable: bool = False,
) -> None:
    """Attach the adapter `config` describes to `model` and copy in its saved `tensors`."""
    try:
        attach(model, config)
    except AdapterError as e:
        raise AdapterError(f"adapter {directory} does not fit this model: {e}") from e
    copy_adapter_state(model, tensors, directory)
    if not trainable:
        for _, layer in adapter_layers(model):
            for name, param in layer.named_parameters():
                if not name.startswith("base_layer."):
                    param.requires_grad_(False)


def load_adapter_weights(
    model: nn.Module, directory: str | os.PathLike, *, root: nn.Module | None = None
) -> None:
    """Load adapter tensors from `directory` into a model that already has the adapter.

    Args:
        root: the FSDP-wrapped model holding `model`, when FSDP shards it (a collective: call
            it on every rank; each keeps its shard).
    """
    directory = Path(directory)
    copy_adapter_state(model, read_tensors(directory), directory, root=root)


def copy_adapter_state(
    model: nn.Module,
    tensors: dict[str, Tensor],
    directory: Path,
    *,
    root: nn.Module | None = None,
) -> None:
    """Copy PEFT-keyed `tensors` into the adapter on `model`, refusing any mismatch.

    Args:
        root: the FSDP-wrapped model holding `model`, when FSDP shards it (a collective).

    Raises:
        AdapterError: names or shapes differ, or FSDP shards `model` and `root` is not given.
    """
    if root is not None:
        entries = adapter_entries(model)
        _check_names(entries, tensors, directory)
        scatter(root, entries, tensors, f"adapter {directory}")
        return
    _refuse_sharded(model)
    expected = _live_tensors(model)
    _check_names(expected, tensors, directory)
    for key, target in expected.items():
        if tensors[key].shape != target.shape:
            raise AdapterError(
                f"adapter {directory}: {key} has shape {list(tensors[key].shape)} but this model "
                f"needs {list(target.shape)}; the adapter was trained on a different base model"
            )
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key])


def _check_names(expected: dict, tensors: dict[str, Tensor], directory: Path) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterError(
            f"adapter {directory} does not match this model ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected), e.g. missing {missing[:2]}, unexpected {unexpected[:2]}; "
            "was it trained on another base model or saved by another smora version?"
        )


def saved_rank_map(directory: str | os.PathLike) -> dict[str, dict[str, int]]:
    """MoRE's learned rank per task and layer, {task: {layer path: e*}}, read from a saved
    adapter without its base model: each layer's router is rebuilt from its tensors.

    Raises:
        AdapterError: unreadable files, or an adapter of another method.
    """
    directory = Path(directory)
    config = read_adapter_config(directory)
    if config.method != "more":
        raise AdapterError(f"{directory} is a {config.method!r} adapter; only 'more' learns ranks")
    tensors = read_tensors(directory)
    suffix = ".router.task_embedding"
    result: dict[str, dict[str, int]] = {task: {} for task in config.task_names}
    for key, embedding in tensors.items():
        if not key.endswith(suffix):
            continue
        stem = key[: -len(suffix)]
        router = TaskPrefixRouter(embedding.shape[-1], config)
        prefix = f"{stem}.router."
        router.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
        for task, rank in zip(config.task_names, router.chosen_ranks(), strict=True):
            result[task][stem[len(PREFIX) :]] = rank
    return result
