"""Terminal tables for evaluation results."""

from __future__ import annotations

from pathlib import Path


def print_eval(report: dict, path: Path | None = None) -> None:
    """Task / metric / value / ± stderr / n table; with an untrained baseline kept beside
    `path` (scored the same way), its values in a last column; then the average and the
    GLUE score."""
    from rich.console import Console
    from rich.table import Table

    from smora_cli.evaluation.results import STDERR, load_untrained, metric_values

    baseline = load_untrained(path, report) if path is not None else None
    table = Table(title=f"evaluation ({report['config'].get('split') or ''})")
    for column in ("task", "metric", "value", "± stderr", "n"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    if baseline:
        table.add_column("untrained", justify="right")
    for task, result in report["results"].items():
        n = str(report["n-samples"][task]["effective"])
        for metric, value in metric_values(report, task).items():
            stderr = _number(result.get(metric + STDERR), missing="")
            row = [task, metric, _number(value), stderr, n]
            if baseline:
                row.append(_number(baseline["results"].get(task, {}).get(metric)))
            table.add_row(*row)
    extra = [""] if baseline else []
    average = ["average", "", _number(report["average"]), "", ""]
    table.add_row(*average, *([_number(baseline["average"])] if baseline else []))
    if "glue" in report:
        glue = report["glue"]
        label = f"{_glue_task_count(glue['tasks'])} of 9 tasks, MNLI once"
        untrained = (
            [_number(baseline["glue"]["score"])] if baseline and "glue" in baseline else extra
        )
        table.add_row("GLUE score", label, _number(glue["score"]), "", "", *untrained)
    console = Console()
    console.print(table)
    if path is not None:
        console.print(f"results written to {path}")


def _glue_task_count(tasks: list[str]) -> int:
    """GLUE counts MNLI-m and MNLI-mm as one task."""
    return len({"mnli" if task.startswith("mnli") else task for task in tasks})


def _number(value, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.4f}"
