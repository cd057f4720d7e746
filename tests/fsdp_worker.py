"""One rank of the FSDP test (tests/test_fsdp.py), started by torchrun with 2 processes.

For FSDP1 (`FullyShardedDataParallel`, use_orig_params) and FSDP2 (`fully_shard`) in turn: a
tiny Llama with a smora adapter, randomised identically on both ranks, is sharded, trained
`STEPS` SGD steps on its half of a fixed batch, and its adapter saved through smora's functions
together with the optimizer state. A freshly built and sharded model with another adapter then
loads both back, as `smora train --resume` does, and both models take one more step.

Rank 0 writes, under OUT/fsdp<version>/: `adapter/` (after STEPS), `continued/` and `resumed/`
(after the extra step of each model), `logits.safetensors` (the trained sharded model's
logits) and `refused.txt` (the error a plain `adapter_state_dict` gives on a sharded model).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from smora_cli import distributed
from smora_cli.adapters import attach
from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.io import adapter_state_dict, load_adapter_weights, write_adapter
from smora_cli.errors import AdapterError
from tests.tiny_models import llama, randomize_adapter

STEPS = 2
LR = 0.1
MOMENTUM = 0.9


def adapter_config() -> AdapterConfig:
    return AdapterConfig(method="smora", r=8, k=2, alpha=8)


def plain_model(adapter_seed: int = 2) -> torch.nn.Module:
    model = llama(seed=0)
    attach(model, adapter_config())
    randomize_adapter(model, seed=adapter_seed)
    return model


def batch() -> torch.Tensor:
    """The global batch: 4 rows, 2 per rank."""
    return torch.randint(1, 100, (4, 9), generator=torch.Generator().manual_seed(5))


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    # SGD is linear in the gradients: sharded and plain runs agree to float rounding.
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)


def train_step(model, opt, ids: torch.Tensor) -> None:
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def shard(model: torch.nn.Module, version: int) -> torch.nn.Module:
    """Shard as Accelerate's TRANSFORMER_BASED_WRAP does: each decoder layer, then the root."""
    layer_class = type(model.model.layers[0])
    if version == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        policy = functools.partial(
            transformer_auto_wrap_policy, transformer_layer_cls={layer_class}
        )
        return FullyShardedDataParallel(
            model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu")
        )
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    return fully_shard(model)


def run(accelerator, version: int, out: Path) -> None:
    main = accelerator.is_main_process
    out.mkdir(parents=True, exist_ok=True)
    ids = batch().chunk(2)[accelerator.process_index]

    model = plain_model()
    wrapped = shard(model, version)
    opt = optimizer(model)
    for _ in range(STEPS):
        train_step(wrapped, opt, ids)

    try:
        adapter_state_dict(model)
    except AdapterError as e:
        if main:
            (out / "refused.txt").write_text(str(e))

    gathered = adapter_state_dict(model, root=wrapped)  # every rank: a collective
    checkpoint = out / "adapter"
    if main:
        checkpoint.mkdir()
        write_adapter(model, checkpoint, tensors=gathered)
    distributed.save_training_state(accelerator, wrapped, opt, checkpoint)
    with torch.no_grad():
        logits = wrapped(input_ids=batch()).logits
    if main:
        save_file({"logits": logits.contiguous()}, str(out / "logits.safetensors"))
    accelerator.wait_for_everyone()

    # Resume: another random adapter, sharded before anything is loaded, as in `smora train`.
    fresh = plain_model(adapter_seed=9)
    fresh_wrapped = shard(fresh, version)
    fresh_opt = optimizer(fresh)
    load_adapter_weights(fresh, checkpoint, root=fresh_wrapped)
    distributed.load_training_state(accelerator, fresh_wrapped, fresh_opt, checkpoint)

    for name, (net, root, opt_) in {
        "continued": (model, wrapped, opt),
        "resumed": (fresh, fresh_wrapped, fresh_opt),
    }.items():
        train_step(root, opt_, ids)
        tensors = adapter_state_dict(net, root=root)
        if main:
            (out / name).mkdir()
            write_adapter(net, out / name, tensors=tensors)
    accelerator.wait_for_everyone()


def main() -> None:
    from smora_cli.utils.accel import make_accelerator

    out = Path(sys.argv[1])
    accelerator = make_accelerator()  # the gloo group of `smora train` on a CPU
    for version in (1, 2):
        run(accelerator, version, out / f"fsdp{version}")


if __name__ == "__main__":
    main()
