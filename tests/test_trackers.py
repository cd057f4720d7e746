"""train.log_with: trackers get every number of metrics.jsonl (no `step` scalar), and a
tracker whose package is missing stops the run before anything loads."""

import json

import pytest

from smora_cli.utils.trackers import check_trackers, tracker_scalars
from tests.cli_helpers import cli, nothing_left, recipe_file


def test_tensorboard_gets_what_metrics_jsonl_holds(tmp_path, monkeypatch, capsys, encoder_dir):
    pytest.importorskip("tensorboard", reason="the test extra installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = recipe_file(tmp_path, encoder_dir, max_steps=4, log_steps=2, log_with=["tensorboard"])
    assert cli(monkeypatch, capsys, "train", recipe, "-q")[0] == 0
    run = tmp_path / "run"
    events = list((run / run.name).glob("events.out.tfevents*"))  # accelerate: project/run name
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert "step" not in tags
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = tracker_scalars(logged[-1])
    assert {"loss", "task_loss/sent", "task_loss/sim", "router/mean_entropy"} <= set(expected)
    assert any(tag.startswith("router/layers/") and tag.endswith("/entropy") for tag in expected)
    assert set(expected) <= tags
    for tag in ("loss", "task_loss/sent", "task_loss/sim", "router/max_load"):
        values = {e.step: e.value for e in accumulator.Scalars(tag)}
        assert values[4] == pytest.approx(expected[tag], rel=1e-6)


def test_missing_tracker_package_stops_before_the_model(tmp_path, monkeypatch, capsys, encoder_dir):
    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the tracker check")

    monkeypatch.setattr("smora_cli.train.load_base_model", no_model)
    recipe = recipe_file(tmp_path, encoder_dir, log_with=["wandb"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # nothing installed
    code, _, error = cli(monkeypatch, capsys, "train", recipe)
    assert code == 2
    assert error == (
        "error: train.log_with: wandb is not installed; pip install 'smora-cli[wandb]' "
        "(or remove it from train.log_with)"
    )
    assert nothing_left(tmp_path)


def test_scalars_are_flattened_without_the_step():
    entry = {"step": 3, "loss": 1.5, "task_loss": {"a": 2.0}, "router": {"layers": {"x.q": {"entropy": 0.5}}}, "ok": True}  # fmt: skip
    assert tracker_scalars(entry) == {
        "loss": 1.5,
        "task_loss/a": 2.0,
        "router/layers/x.q/entropy": 0.5,
    }
    check_trackers([])  # nothing asked, nothing checked
