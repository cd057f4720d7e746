"""`smora sweep-granularity`: SMoRA's granularity study over the rank per expert."""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """
Examples:

  smora sweep-granularity --list-cells                       # the plan on the decoder quickstart
  smora sweep-granularity --expert-ranks 1,8 --methods smora --seeds 1 train.max_steps=100
  smora sweep-granularity configs/sweep.yaml                 # the full grid, resumable
  sbatch --array=0-32 scripts/slurm_sweep_array.sh configs/sweep.yaml   # its 33 cells, one per task
  (--list-cells ends with the --array range of any grid)
"""


def sweep_granularity(
    recipe: str | None = typer.Argument(
        None, help="Base recipe (default: the decoder quickstart)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="key.path=value overrides."),
    r: int | None = typer.Option(None, "--r", help="Total rank r (sweep.r, default 64)."),
    k: int | None = typer.Option(None, "--k", help="Activated rank k (sweep.k, default 8)."),
    expert_ranks: str | None = typer.Option(None, "--expert-ranks", help="p values: 1,2,4,8."),
    methods: str | None = typer.Option(None, "--methods", help="smora,moe-lora,flylora."),
    baselines: str | None = typer.Option(None, "--baselines", help="lora:8,lora:64."),
    seeds: str | None = typer.Option(None, "--seeds", help="1,2,3."),
    out: Path | None = typer.Option(None, "--out", help="Sweep directory (runs/sweep)."),
    cell: int | None = typer.Option(None, "--cell", help="Run only cell I (SLURM arrays)."),
    list_cells: bool = typer.Option(False, "--list-cells", help="Print the plan and exit."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rerun cells whose earlier run used another recipe."
    ),
) -> None:
    """SMoRA's granularity study: fixed total and active rank, vary the rank per expert."""
    from smora_cli.recipe import load_recipe, recipe_arguments
    from smora_cli.sweep import cell_lines, plan_cells, run_sweep, sweep_section

    base = load_recipe(*recipe_arguments(recipe, overrides))
    flags = {
        "r": r,
        "k": k,
        "expert_ranks": _int_list(expert_ranks, "--expert-ranks"),
        "methods": _str_list(methods),
        "baselines": _str_list(baselines),
        "seeds": _int_list(seeds, "--seeds"),
        "output_dir": None if out is None else str(out),
    }
    sweep = sweep_section(base.sweep, flags)
    if list_cells:
        for line in cell_lines(plan_cells(sweep, echo=typer.echo)):
            typer.echo(line)
        return
    run_sweep(base, sweep, cell_index=cell, overwrite=overwrite, echo=typer.echo)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise typer.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=flag
        ) from e


def _str_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]
