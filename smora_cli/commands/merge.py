"""`smora merge`: fold adapters into base weights, or merge several task adapters into one."""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """
Examples:

  smora merge --adapter runs/quickstart-lora/adapter merged/       # fold one adapter into its base
  smora merge --adapter runs/glue/adapter --task sst2 merged-sst2/  # MoRE: one task's rank map
  smora merge --adapter runs/glue/adapter --per-task merged-glue/  # MoRE: one model per task
  smora merge configs/merge.yaml merged/                           # several adapters (YAML)
"""


def merge(
    paths: list[Path] = typer.Argument(..., help="[CONFIG.yaml] OUT_DIR"),
    adapter: Path | None = typer.Option(None, "--adapter", help="Fold this one adapter."),
    base: str | None = typer.Option(None, "--base", help="Base model (default: recorded)."),
    task: str | None = typer.Option(None, "--task", help="MoRE: the task to fold."),
    per_task: bool = typer.Option(False, "--per-task", help="MoRE: one output per task."),
    output: str = typer.Option("model", "--output", help="model, adapter or peft."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT_DIR."),
) -> None:
    """Fold adapters into base weights, or merge several task adapters into one."""
    if len(paths) > 2:
        raise typer.BadParameter("give [CONFIG.yaml] OUT_DIR", param_hint="PATHS")
    from smora_cli.merging.config import merge_request

    request = merge_request(  # checked before the merge code (torch) is imported
        paths[0] if len(paths) == 2 else None,
        paths[-1],
        adapter=adapter,
        task=task,
        per_task=per_task,
        base=base,
        dtype=dtype,
        output=output,
    )
    from smora_cli.merging.run import run_request

    run_request(request, paths[-1], overwrite=overwrite, echo=typer.echo)
