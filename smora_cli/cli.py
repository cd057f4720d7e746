"""The `smora` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from smora_cli import __version__
from smora_cli.errors import SmoraError, UserInputError

app = typer.Typer(
    name="smora",
    help="Multi-task fine-tuning with rank-wise Mixture-of-Experts LoRA adapters "
    "(SMoRA, FlyLoRA, MoRE and their baselines).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """smora: train, evaluate, merge and study rank-expert adapters."""


def _split_recipe_and_overrides(
    recipe: str | None, overrides: list[str] | None
) -> tuple[Path | None, list[str]]:
    """`smora train train.lr=1e-4` has no recipe: its first word is an override."""
    overrides = list(overrides or [])
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        return None, [recipe, *overrides]
    return (Path(recipe) if recipe else None), overrides


TRAIN_EXAMPLES = """
Examples:

  smora train                                   # the offline quickstart
  smora train configs/quickstart.yaml adapter.method=flylora adapter.r=32 adapter.k=8
  smora train configs/glue.yaml train.lr=1e-4 train.output_dir=runs/glue-more
  smora train configs/flan_mix.yaml --resume    # continue from the last checkpoint
  accelerate launch --num_processes 2 -m smora_cli train configs/quickstart.yaml
"""


@app.command(epilog=TRAIN_EXAMPLES)
def train(
    recipe: str | None = typer.Argument(
        None, help="Recipe YAML (default: the offline quickstart)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="key.path=value overrides."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the recipe."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a rank-expert adapter on a multi-task mixture described by a recipe."""
    from smora_cli.recipe import load_recipe

    path, overrides = _split_recipe_and_overrides(recipe, overrides)
    loaded = load_recipe(path, overrides)
    if dry_run:
        typer.echo(loaded.to_yaml(), nl=False)
        return
    from smora_cli.reporting import print_eval
    from smora_cli.train import run
    from smora_cli.utils.accel import is_main_process

    result = run(
        loaded, overwrite=overwrite, resume=resume, show_progress=not quiet, echo=typer.echo
    )
    if is_main_process():
        typer.echo(f"run directory: {result.output_dir}")
        if result.eval:
            from smora_cli.evaluation.results import results_path

            print_eval(result.eval, results_path(result.output_dir, result.eval["config"]["split"]))
    raise typer.Exit(result.exit_code)


EVAL_EXAMPLES = """
Examples:

  smora eval runs/quickstart                        # the run's tasks, its final adapter
  smora eval --tasks glue                           # the most recent run under ./runs
  smora eval runs/glue --tasks cola,mrpc,rte,stsb,sst2,qnli,mnli --data-dir glue_data
  smora eval --tasks glue --model google-t5/t5-base --adapter runs/glue/adapter --data-dir glue_data --skip-missing
  smora eval --model HuggingFaceTB/SmolLM2-135M-Instruct --task-file tasks.yaml --limit 100
  smora eval --tasks cola,sst2 --model gpt2 --limit 200 --log-samples --output-path base.json
  smora eval runs/quickstart --model merged/ --no-adapter     # a merged model on a run's tasks
  accelerate launch --multi_gpu --num_processes 8 -m smora_cli eval runs/glue --tasks glue
"""


@app.command("eval", epilog=EVAL_EXAMPLES)
def eval_command(
    run_dir: Path | None = typer.Argument(None, help="A run directory (its recipe and adapter)."),
    tasks: str | None = typer.Option(
        None,
        "--tasks",
        help="Comma list: glue, mnli, GLUE/offline/recipe/task-file task names "
        "(default: the run's or the task file's tasks).",
    ),
    task_file: Path | None = typer.Option(
        None, "--task-file", help="YAML with a recipe-style `tasks:` list (no run needed)."
    ),
    model: str | None = typer.Option(None, "--model", help="Base model id or path."),
    adapter: Path | None = typer.Option(None, "--adapter", help="Adapter directory."),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="classifier, causal-lm or seq2seq (default: from the run or the model).",
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="GLUE folder: save_to_disk task folders (cola/, mnli/) or the TSV distribution "
        "(CoLA/dev.tsv); default $SMORA_GLUE_DIR.",
    ),
    skip_missing: bool = typer.Option(
        False, "--skip-missing", help="Score the tasks whose split is present, name the others."
    ),
    split: str = typer.Option("validation", "--split"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Examples per task."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Default: the run's eval.batch_size, else 64."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit subset and the bootstrap."),
    bootstrap_iters: int = typer.Option(
        1000, "--bootstrap-iters", min=0, help="Bootstrap resamples of F1/MCC/correlation stderrs."
    ),
    output_path: Path | None = typer.Option(None, "--output-path", help="Results JSON file."),
    log_samples: bool = typer.Option(False, "--log-samples", help="Also write predictions."),
    no_adapter: bool = typer.Option(
        False, "--no-adapter", help="Score --model alone, e.g. a merged model on RUN_DIR's tasks."
    ),
) -> None:
    """Score a base model, with or without an adapter, on GLUE and other tasks."""
    from smora_cli.evaluation.job import EvalRequest, run_eval
    from smora_cli.reporting import print_eval
    from smora_cli.utils.accel import is_main_process

    if kind not in (None, "classifier", "causal-lm", "seq2seq"):
        raise typer.BadParameter("must be classifier, causal-lm or seq2seq", param_hint="--kind")
    if run_dir is not None and not run_dir.is_dir():
        raise typer.BadParameter(f"{run_dir} is not a directory", param_hint="RUN_DIR")
    request = EvalRequest(
        run_dir=run_dir,
        model=model,
        adapter=adapter,
        kind=kind,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None,
        data_dir=data_dir,
        split=split,
        limit=limit,
        batch_size=batch_size,
        output_path=output_path,
        log_samples=log_samples,
        no_adapter=no_adapter,
        task_file=task_file,
        skip_missing=skip_missing,
        seed=seed,
        bootstrap_iters=bootstrap_iters,
    )
    report, job = run_eval(request, echo=typer.echo)
    if is_main_process():
        print_eval(report, job.output_path)


MERGE_EXAMPLES = """
Examples:

  smora merge --adapter runs/quickstart-lora/adapter merged/       # fold one adapter into its base
  smora merge --adapter runs/glue/adapter --task sst2 merged-sst2/  # MoRE: one task's rank map
  smora merge --adapter runs/glue/adapter --per-task merged-glue/  # MoRE: one model per task
  smora merge configs/merge.yaml merged/                           # several adapters (YAML)
"""


@app.command(epilog=MERGE_EXAMPLES)
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
    from smora_cli.merging.config import load_merge_config, merge_config_from_dict
    from smora_cli.merging.run import export_per_task, run_merge

    if len(paths) > 2:
        raise typer.BadParameter("give [CONFIG.yaml] OUT_DIR", param_hint="PATHS")
    out_dir = paths[-1]
    if len(paths) == 2:
        if adapter or task or per_task:
            raise typer.BadParameter("a merge config replaces --adapter/--task/--per-task")
        run_merge(load_merge_config(paths[0]), out_dir, overwrite=overwrite, echo=typer.echo)
        return
    if adapter is None and out_dir.is_file():
        raise UserInputError(f"OUT_DIR is missing: smora merge {out_dir} OUT_DIR")
    if adapter is None:
        raise typer.BadParameter("give a merge CONFIG.yaml, or --adapter DIR to fold one adapter")
    if per_task:
        export_per_task(
            adapter,
            out_dir,
            base_model=base,
            dtype=dtype,
            output=output,
            overwrite=overwrite,
            echo=typer.echo,
        )
        return
    config = merge_config_from_dict(
        {
            "base_model": base,
            "merge_method": "fold",
            "dtype": dtype,
            "output": output,
            "models": [{"adapter": str(adapter), "task": task}],
        },
        source="command line",
    )
    run_merge(config, out_dir, overwrite=overwrite, echo=typer.echo)


SWEEP_EXAMPLES = """
Examples:

  smora sweep-granularity --list-cells                       # the plan on the quickstart
  smora sweep-granularity --expert-ranks 1,8 --methods smora --seeds 1 train.max_steps=100
  smora sweep-granularity configs/sweep.yaml                 # the full grid, resumable
  sbatch --array=0-32 scripts/slurm_sweep_array.sh configs/sweep.yaml   # its 33 cells, one per task
  (--list-cells ends with the --array range of any grid)
"""


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


@app.command("sweep-granularity", epilog=SWEEP_EXAMPLES)
def sweep_granularity(
    recipe: str | None = typer.Argument(None, help="Base recipe (default: the quickstart)."),
    overrides: list[str] | None = typer.Argument(None, help="key.path=value overrides."),
    total_rank: int | None = typer.Option(None, "--total-rank", help="r (default 64)."),
    active_rank: int | None = typer.Option(None, "--active-rank", help="k (default 8)."),
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
    from smora_cli.recipe import load_recipe
    from smora_cli.sweep import plan_cells, run_sweep

    path, overrides = _split_recipe_and_overrides(recipe, overrides)
    base = load_recipe(path, overrides)
    sweep = base.sweep
    flags = {
        "total_rank": total_rank,
        "active_rank": active_rank,
        "expert_ranks": _int_list(expert_ranks, "--expert-ranks"),
        "methods": _str_list(methods),
        "baselines": _str_list(baselines),
        "seeds": _int_list(seeds, "--seeds"),
        "output_dir": str(out) if out else None,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(sweep, key, value)
    if list_cells:
        cells = plan_cells(sweep, echo=typer.echo)
        for planned in cells:
            typer.echo(
                f"{planned.index:3d}  {planned.name:24s} method={planned.method} "
                f"r={planned.r} k={planned.k} p={planned.expert_rank} "
                f"E={planned.experts} active={planned.active_experts}"
            )
        typer.echo(f"{len(cells)} cells; as a SLURM array: sbatch --array=0-{len(cells) - 1} ...")
        return
    run_sweep(base, sweep, cell_index=cell, overwrite=overwrite, echo=typer.echo)


def main() -> None:
    """Console entry point: map smora's errors to one line and an exit code."""
    from smora_cli.utils.signals import Interrupted, interrupting_signals

    try:
        with interrupting_signals():
            app()
    except Interrupted as e:
        _fail(
            f"interrupted by {e}; nothing is left half-written (smora writes through "
            "temporary files); run the same command again (smora train: with --resume "
            "once the run has a checkpoint)",
            e.exit_code,
        )
    except SmoraError as e:
        _fail(str(e), e.exit_code)
    except OSError as e:  # disk full, permissions, a file where a folder should be
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"{e.strerror or e}{where}", 1)


def _fail(message: str, code: int) -> None:
    if os.environ.get("SMORA_DEBUG"):
        raise
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    typer.echo("(set SMORA_DEBUG=1 for the full traceback)", err=True)
    sys.exit(code)
