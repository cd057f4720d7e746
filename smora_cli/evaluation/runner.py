"""Evaluate a model on tasks: shard examples over processes, gather, compute metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from smora_cli.data.sources import TaskData
from smora_cli.evaluation.metrics import compute, primary_score
from smora_cli.evaluation.scoring import Scorer, references
from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS
from smora_cli.kinds import ModelKind


@dataclass
class TaskResult:
    """Metrics of one task on one split."""

    task: str
    split: str
    n: int
    metrics: dict[str, float | None]  # each score and its standard error (`<key>_stderr`)
    score: float  # mean of the task's primary metric values (what averages are made of)
    samples: list[dict] = field(default_factory=list)
    n_original: int | None = None  # examples in the split before `limit`


def evaluate_task(
    scorer: Scorer,
    data: TaskData,
    *,
    batch_size: int,
    accelerator=None,
    log_samples: bool = False,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> TaskResult:
    """Predict every example of `data` (each process a strided shard) and score them."""
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    mine = list(range(rank, len(data), world))
    rows = []
    was_training = scorer.model.training
    scorer.model.eval()
    bar = _progress(scorer, data, total=len(mine), main=rank == 0)
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
            bar.update(len(indices))
    finally:
        bar.close()
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
        values = compute(metric, predictions, gold, bootstrap_iters=bootstrap_iters, seed=seed)
        metrics.update(values)
        primaries.append(primary_score(metric, values))
    samples = []
    if log_samples:
        samples = [
            {
                "doc_id": i,
                "input": item["text"],
                "input_b": item["text_b"],
                "prediction": p,
                "reference": r,
            }
            for i, p, r, item in rows
        ]
    # A constant prediction has no defined correlation (NaN): it counts as 0 in averages.
    primaries = [0.0 if math.isnan(p) else p for p in primaries]
    score = sum(primaries) / len(primaries)
    return TaskResult(
        data.task.name, data.split, len(rows), metrics, score, samples, data.n_original
    )


def _progress(scorer: Scorer, data: TaskData, *, total: int, main: bool):
    """A bar per task with examples/s (rank 0's shard), like the training bar."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"eval {data.task.name}",
        unit="ex",
        disable=not (scorer.show_progress and main),
        dynamic_ncols=True,
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
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> TaskResult:
    """Load `split` of `task` (at most `limit` examples, a `seed`ed subset) and evaluate it."""
    from smora_cli.data.sources import load_task_split

    data = load_task_split(
        task,
        split,
        task_id=task_id,
        text_to_text=scorer.kind != ModelKind.CLASSIFIER,
        limit=limit or task.max_eval_examples,
        shuffle_seed=seed,
    )
    return evaluate_task(
        scorer,
        data,
        batch_size=batch_size,
        accelerator=accelerator,
        log_samples=log_samples,
        bootstrap_iters=bootstrap_iters,
        seed=seed,
    )
