"""`smora train`: train a rank-expert adapter on the multi-task mixture a recipe describes."""

from __future__ import annotations

import typer

EXAMPLES = """
Examples:

  smora train                                   # the decoder quickstart, offline
  smora train configs/quickstart_lm.yaml adapter.method=flylora
  smora train configs/quickstart.yaml           # the encoder quickstart
  smora train configs/glue.yaml train.lr=1e-4 train.output_dir=runs/glue-more
  smora train configs/flan_mix.yaml --resume    # continue from the last checkpoint
  accelerate launch --num_processes 2 -m smora_cli train configs/quickstart.yaml
"""


def train(
    recipe: str | None = typer.Argument(
        None, help="Recipe YAML (default: configs/quickstart_lm.yaml, offline)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="key.path=value overrides."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the recipe."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a rank-expert adapter on a multi-task mixture described by a recipe."""
    from smora_cli.recipe import load_recipe, recipe_arguments

    loaded = load_recipe(*recipe_arguments(recipe, overrides))
    if dry_run:
        typer.echo(loaded.to_yaml(), nl=False)
        return
    from smora_cli.evaluation.results import results_path
    from smora_cli.reporting import print_eval
    from smora_cli.train import run
    from smora_cli.utils.accel import is_main_process

    result = run(
        loaded, overwrite=overwrite, resume=resume, show_progress=not quiet, echo=typer.echo
    )
    if is_main_process():
        typer.echo(f"run directory: {result.output_dir}")
        if result.eval:
            print_eval(result.eval, results_path(result.output_dir, result.eval["config"]["split"]))
    raise typer.Exit(result.exit_code)
