"""One rank of `smora train` under Accelerate's FSDP2 on the CPU (tests/test_fsdp.py).

Accelerate 1.16 refuses FSDP on a CPU: without a GPU its distributed type is MULTI_CPU and
`prepare` wraps the model in DDP. This worker builds smora's Accelerator as usual, then sets
its state to FSDP with an FSDP2 plugin (Accelerate's FSDP1 path fails on a CPU even then), so
the trainer's FSDP branches run with Accelerate's own FSDP2 preparation.

Usage: torchrun --nproc_per_node 2 -m tests.fsdp_train_worker RECIPE.json RESUMED_DIR
trains RECIPE, copies its run directory to RESUMED_DIR without the last checkpoint and the
final adapter, and resumes it there.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from smora_cli import train
from smora_cli.recipe import recipe_from_dict

_plain_accelerator = train._accelerator


def fsdp2_accelerator(recipe, run_dir):
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    accelerator = _plain_accelerator(recipe, run_dir)
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["BertLayer"],
        state_dict_type="FULL_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )
    accelerator.state.distributed_type = DistributedType.FSDP
    # end_training destroys the gloo group, which the resumed run in this process still needs.
    accelerator.end_training = lambda: None
    return accelerator


def main() -> None:
    recipe = json.loads(Path(sys.argv[1]).read_text())
    resumed = Path(sys.argv[2])
    train._accelerator = fsdp2_accelerator
    train.run(recipe_from_dict(recipe), show_progress=False)

    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        first = Path(recipe["train"]["output_dir"])
        last = max(int(p.name.split("-")[1]) for p in (first / "checkpoints").iterdir())
        shutil.copytree(first, resumed)
        shutil.rmtree(resumed / "checkpoints" / f"step-{last}")
        shutil.rmtree(resumed / "adapter")
    state.wait_for_everyone()
    recipe["train"]["output_dir"] = str(resumed)
    train.run(recipe_from_dict(recipe), resume=True, show_progress=False)


if __name__ == "__main__":
    main()
