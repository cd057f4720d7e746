"""metrics.jsonl entries: losses per example or target token over an interval, micro-batches
and processes counted once each."""

import json

import pytest

from smora_cli.utils.log import MetricsLog


def step(loss_sum, weight, *, micro=1, task=None, aux=None, tokens=10):
    task = task or {}
    return {
        "loss_sum": loss_sum,
        "weight": weight,
        "tokens": tokens,
        "micro_batches": micro,
        "grad_norm": 1.0,
        "task_loss": {name: value for name, (value, _) in task.items()},
        "task_count": {name: count for name, (_, count) in task.items()},
        "aux": aux or {},
    }


def test_interval_averages(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, start_step=0)
    # Two steps of two micro-batches each: 8 examples with loss 3.0 in all, then 8 with 5.0.
    log.record(1, step(8 * 3.0, 8, micro=2, task={"a": (8 * 3.0, 8)}, aux={"b": 0.2}), lr=0.1)
    log.record(2, step(8 * 5.0, 8, micro=2, task={"a": (6 * 5.0, 6), "c": (10.0, 2)}), lr=0.2)
    entry = log.flush(2, {}, {"a": 14, "c": 2})
    assert entry["loss"] == pytest.approx(4.0)  # not the sum over micro-batches (was 8.0)
    assert entry["task_loss"] == pytest.approx({"a": (24 + 30) / 14, "c": 5.0})
    assert entry["aux"] == pytest.approx({"b": 0.2 / 4})  # per micro-batch
    assert entry["lr"] == 0.2 and entry["grad_norm"] == 1.0
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == entry["loss"]


def test_combined_processes_weigh_examples(tmp_path):
    """Rank 0 saw 2 examples of loss 1, rank 1 saw 6 of loss 3: the job's loss is 2.5."""
    ranks = [MetricsLog(tmp_path, enabled=rank == 0, start_step=0) for rank in (0, 1)]
    ranks[0].record(1, step(2.0, 2, task={"a": (2.0, 2)}, aux={"b": 1.0}), lr=0.1)
    ranks[1].record(1, step(18.0, 6, task={"a": (12.0, 4), "c": (6.0, 2)}, aux={"b": 3.0}), lr=0.1)
    gathered = [log.sums for log in ranks]
    for log in ranks:
        log.combine(gathered)
    entries = [log.flush(1, {}, {}) for log in ranks]
    assert entries[0]["loss"] == entries[1]["loss"] == pytest.approx(20 / 8)
    assert entries[0]["task_loss"] == pytest.approx({"a": 14 / 6, "c": 3.0})
    assert entries[0]["aux"] == pytest.approx({"b": 2.0})
    assert entries[0]["tokens_per_s"] > 0
