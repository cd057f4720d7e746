"""PEFT sequence-classification adapters (`task_type: SEQ_CLS`) as one-task smora classifiers.

PEFT's default SEQ_CLS adapter trains LoRA on an `AutoModelForSequenceClassification` and saves
its classification layer whole (`modules_to_save: [classifier, score]`). smora puts the LoRA on
the bare encoder (`AutoModel`, as its classifier kind does) and makes the saved layer the task
head, reading the vector the transformers class reads: the pooler output for BERT-style
encoders (`classifier`), the last real token for decoders (`score`). So the logits are PEFT's.
A classification module that is more than that one linear layer (RoBERTa's and ELECTRA's
two-layer heads, DistilBERT's pre-classifier, DeBERTa's context pooler) has no smora
equivalent and is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smora_cli.errors import AdapterError

HEAD_MODULES = ("classifier", "score")
# How AutoModelForSequenceClassification pools before each head (MultiTaskClassifier names).
POOLING = {"classifier": "pooler", "score": "last"}
PEFT_PREFIX = "base_model.model."


def head_modules(data: dict[str, Any]) -> list[str] | None:
    """The head modules a PEFT adapter config saves whole, when it is a SEQ_CLS adapter
    that saves nothing but classification heads; else None."""
    saved = data.get("modules_to_save")
    if data.get("task_type") != "SEQ_CLS" or not saved or not set(saved) <= set(HEAD_MODULES):
        return None
    return list(saved)


def is_peft_classifier(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a PEFT LoRA SEQ_CLS adapter (LoRA plus a saved head)."""
    try:
        data = json.loads((Path(directory) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("peft_type") == "LORA" and bool(head_modules(data))


def load_peft_classifier(encoder: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """A one-task `MultiTaskClassifier` of `encoder` (an `AutoModel`) with the PEFT SEQ_CLS
    adapter in `directory`: its LoRA on the encoder, its saved head as the task head.

    Raises:
        AdapterError: the adapter does not fit `encoder`, or its head is not one linear layer
            on a vector smora can pool (see the module docstring).
    """
    from smora_cli.adapters.io import attach_loaded, read_adapter_config, read_tensors
    from smora_cli.models import MultiTaskClassifier

    directory = Path(directory)
    config = read_adapter_config(directory)
    tensors = read_tensors(directory)
    name, head = _pop_head(tensors, directory)
    _check_head(encoder, name, directory)
    prefix = f"{encoder.base_model_prefix}."
    # The adapter was trained on the model that holds the encoder under `prefix`.
    lora = {PEFT_PREFIX + _drop(key[len(PEFT_PREFIX) :], prefix): v for key, v in tensors.items()}
    if isinstance(config.target_modules, list):
        config.target_modules = [_drop(target, prefix) for target in config.target_modules]
    attach_loaded(encoder, config, lora, directory)
    outputs = head["weight"].shape[0]
    model = MultiTaskClassifier(encoder, [0 if outputs == 1 else outputs], POOLING[name], [name])
    linear = model.task_heads[0].to(next(encoder.parameters()).device)
    with torch.no_grad():
        linear.weight.copy_(head["weight"])
        if "bias" in head:
            linear.bias.copy_(head["bias"])
        else:  # `score` layers have none
            linear.bias.zero_()
    return model.requires_grad_(False)


def _drop(path: str, prefix: str) -> str:
    return path[len(prefix) :] if path.startswith(prefix) else path


def _pop_head(tensors: dict[str, Tensor], directory: Path) -> tuple[str, dict[str, Tensor]]:
    """(head module name, {"weight": ..., "bias": ...}), removed from `tensors`."""
    found = {}
    for name in HEAD_MODULES:
        keys = [key for key in tensors if key.startswith(f"{PEFT_PREFIX}{name}.")]
        if keys:
            found[name] = {key[len(f"{PEFT_PREFIX}{name}.") :]: tensors.pop(key) for key in keys}
    if len(found) != 1:
        raise AdapterError(
            f"adapter {directory}: a PEFT SEQ_CLS adapter saves one head "
            f"({' or '.join(HEAD_MODULES)}); found {sorted(found) or 'none'}"
        )
    name, head = found.popitem()
    if set(head) - {"weight", "bias"} or head.get("weight") is None or head["weight"].ndim != 2:
        raise AdapterError(
            f"adapter {directory}: its head {name!r} has tensors {sorted(head)}, not one linear "
            "layer; smora classifiers have a linear head on a pooled vector, so this "
            "architecture's classification head cannot be reproduced"
        )
    return name, head


def _check_head(encoder: nn.Module, name: str, directory: Path) -> None:
    """The architecture's sequence classifier is `encoder` + `name` (a linear layer) and
    nothing else that holds weights, and reads a vector smora pools the same way."""
    from transformers import AutoModelForSequenceClassification

    architecture = type(encoder).__name__
    try:
        with torch.device("meta"):  # the module structure only, no weights
            probe = AutoModelForSequenceClassification.from_config(encoder.config)
    except ValueError as e:
        raise AdapterError(
            f"adapter {directory} is a sequence-classification adapter, but {architecture} "
            "has no sequence-classification class in transformers"
        ) from e
    prefix = probe.base_model_prefix
    extra = [
        child
        for child, module in probe.named_children()
        if child not in (prefix, name) and any(True for _ in module.parameters())
    ]
    problem = None
    if not isinstance(getattr(probe, name, None), nn.Linear):
        problem = f"its {name!r} is not one linear layer"
    elif extra:
        problem = f"its classifier also has {', '.join(extra)}, which the adapter did not save"
    elif type(getattr(probe, prefix, None)) is not type(encoder):
        problem = "its classifier wraps another encoder class"
    elif name == "classifier" and getattr(encoder, "pooler", None) is None:
        problem = "the encoder has no pooler for the head to read"
    if problem:
        raise AdapterError(
            f"adapter {directory}: {type(probe).__name__} cannot be reproduced as a smora "
            f"classifier: {problem}"
        )
