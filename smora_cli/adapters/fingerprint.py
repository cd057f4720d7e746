"""A short fingerprint of the base weights an adapter was trained on.

Two checkpoints of one architecture (a base and its fine-tune, two seeds) load into the same
shapes, so an adapter attaches to either without complaint and scores the wrong model. The
fingerprint hashes a few values of every adapted base weight, rounded to bfloat16 so that the
same checkpoint loaded in float32 or bfloat16 gives the same fingerprint. It is written into the
adapter's safetensors metadata and compared when the adapter is loaded for evaluation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from smora_cli.adapters.inject import adapter_layers

METADATA_KEY = "smora_base_fingerprint"
SAMPLES_PER_WEIGHT = 16


def base_fingerprint(model: nn.Module) -> str | None:
    """Hex digest over sampled values of the base weights under the adapter on `model`.

    None when a base weight is not whole on this process (on the meta device, or an empty
    FSDP view; callers skip sharded models).
    """
    digest = hashlib.sha256()
    for path, layer in sorted(adapter_layers(model), key=lambda item: item[0]):
        weight = layer.base_layer.weight
        if weight.is_meta or weight.numel() == 0:
            return None
        flat = weight.detach().reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, SAMPLES_PER_WEIGHT).round().long()
        values = flat[index.to(flat.device)].to(torch.bfloat16).float().cpu()
        digest.update(path.encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def recorded_fingerprint(weights_file: str | Path) -> str | None:
    """The fingerprint an adapter file records (None for adapters written without one)."""
    with safe_open(str(weights_file), framework="pt") as handle:
        return (handle.metadata() or {}).get(METADATA_KEY)


def trained_on_other_weights(model: nn.Module, weights_file: str | Path) -> bool:
    """Whether the base weights under the adapter on `model` differ from those the adapter in
    `weights_file` was trained on (False when either fingerprint is unknown)."""
    recorded = recorded_fingerprint(weights_file)
    current = base_fingerprint(model) if recorded is not None else None
    return current is not None and current != recorded
