"""Terminal tables for evaluation results."""

from __future__ import annotations

from pathlib import Path


def print_eval(report: dict, path: Path | None = None) -> None:
    """Task / metric / value / n table (with the untrained baseline when there is one)."""
    from rich.console import Console
    from rich.table import Table

    baseline = report.get("baseline", {}).get("tasks", {})
    table = Table(title=f"evaluation ({report.get('split', '')})")
    for column in ("task", "metric", "value", "n"):
        table.add_column(column, justify="right" if column in ("value", "n") else "left")
    if baseline:
        table.add_column("untrained", justify="right")
    for task, result in report["tasks"].items():
        for metric, value in result["metrics"].items():
            row = [task, metric, _number(value), str(result["n"])]
            if baseline:
                row.append(_number(baseline.get(task, {}).get("metrics", {}).get(metric)))
            table.add_row(*row)
    average = ["average", "", _number(report["average"]), ""]
    if baseline:
        average.append(_number(report["baseline"]["average"]))
    table.add_row(*average)
    if "glue_average" in report:
        table.add_row(
            "GLUE score",
            f"{len(report['glue_tasks'])} tasks, MNLI once",
            _number(report["glue_average"]),
            "",
            *([""] if baseline else []),
        )
    console = Console()
    console.print(table)
    if path is not None:
        console.print(f"results written to {path}")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
