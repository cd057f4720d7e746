"""`smora eval`: score a base model, with or without an adapter, on GLUE and other tasks."""

from __future__ import annotations

from pathlib import Path

import typer

from smora_cli.kinds import ModelKind

EXAMPLES = """
Examples:

  smora eval runs/quickstart_lm                     # the run's tasks, its final adapter
  smora eval --tasks glue                           # the most recent run under ./runs
  smora eval runs/glue --tasks cola,mrpc,rte,stsb,sst2,qnli,mnli --data-dir glue_data
  smora eval --tasks glue --model google-t5/t5-base --adapter runs/glue/adapter --data-dir glue_data --skip-missing
  smora eval --model HuggingFaceTB/SmolLM2-135M-Instruct --task-file tasks.yaml --limit 100
  smora eval --tasks cola,sst2 --model gpt2 --limit 200 --log-samples --output-path base.json
  smora eval runs/quickstart_lm --model merged/ --no-adapter  # a merged model on a run's tasks
  accelerate launch --multi_gpu --num_processes 8 -m smora_cli eval runs/glue --tasks glue
"""


def eval_command(
    run_dir: Path | None = typer.Argument(
        None,
        exists=True,
        file_okay=False,
        help="A run directory (its recipe and adapter).",
    ),
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
    kind: ModelKind | None = typer.Option(
        None, "--kind", help="The model's kind (default: from the run or the model)."
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

    request = EvalRequest(
        run_dir=run_dir,
        model=model,
        adapter=adapter,
        kind=None if kind is None else kind.value,
        tasks=_names(tasks),
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


def _names(text: str | None) -> list[str] | None:
    """`cola, sst2,` -> ["cola", "sst2"]."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None
