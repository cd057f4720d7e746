"""Evaluate a model on tasks: shard examples over processes, gather, compute metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from smora_cli.data.sources import TaskData
from smora_cli.evaluation.metrics import compute, primary_score
from smora_cli.evaluation.scoring import Scorer, references


@dataclass
class TaskResult:
    """Metrics of one task on one split."""

    task: str
    split: str
    n: int
    metrics: dict[str, float]
    score: float  # mean of the task's primary metric values (what averages are made of)
    samples: list[dict] = field(default_factory=list)


def evaluate_task(
    scorer: Scorer, data: TaskData, *, batch_size: int, accelerator=None, log_samples: bool = False
) -> TaskResult:
    """Predict every example of `data` (each process a strided shard) and score them."""
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    mine = list(range(rank, len(data), world))
    rows = []
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        for start in range(0, len(mine), batch_size):
            indices = mine[start : start + batch_size]
            items = [data[i] for i in indices]
            predictions = scorer.predict(data, items)
            rows += [
                (i, p, r, item)
                for i, p, r, item in zip(
                    indices, predictions, references(data, items), items, strict=True
                )
            ]
    finally:
        scorer.model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    rows.sort(key=lambda row: row[0])
    predictions = [row[1] for row in rows]
    gold = [row[2] for row in rows]
    metrics: dict[str, float] = {}
    primaries = []
    for metric in data.task.metrics:
        values = compute(metric, predictions, gold)
        metrics.update(values)
        primaries.append(primary_score(metric, values))
    samples = []
    if log_samples:
        samples = [
            {
                "index": i,
                "input": item["text"],
                "input_b": item["text_b"],
                "prediction": p,
                "reference": r,
            }
            for i, p, r, item in rows
        ]
    # A constant prediction has no defined correlation (NaN): it counts as 0 in averages.
    primaries = [0.0 if math.isnan(p) else p for p in primaries]
    return TaskResult(
        data.task.name, data.split, len(rows), metrics, sum(primaries) / len(primaries), samples
    )


def score_task(
    scorer: Scorer,
    task,
    *,
    split: str,
    task_id: int,
    batch_size: int,
    limit: int | None = None,
    accelerator=None,
    log_samples: bool = False,
) -> TaskResult:
    """Load `split` of `task` (at most `limit` examples) and evaluate it."""
    from smora_cli.data.sources import load_task_split

    data = load_task_split(
        task,
        split,
        task_id=task_id,
        text_to_text=scorer.kind != "classifier",
        limit=limit or task.max_eval_examples,
    )
    return evaluate_task(
        scorer, data, batch_size=batch_size, accelerator=accelerator, log_samples=log_samples
    )


def summarise(results: dict[str, TaskResult]) -> dict:
    """{"tasks": {name: {metrics, score, n}}, "average": mean task score}."""
    tasks = {
        name: {"metrics": r.metrics, "score": r.score, "n": r.n} for name, r in results.items()
    }
    return {"tasks": tasks, "average": sum(r.score for r in results.values()) / len(results)}


def write_json(report: dict, path) -> None:
    """Strict JSON (NaN -> null), written atomically."""
    import json

    from smora_cli.utils.fs import atomic_write_text

    atomic_write_text(path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


def json_safe(value):
    """NaN/inf become null, so result files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
