"""A checkpoint's trainer_state.json is a real `transformers.TrainerState`."""

import json

import pytest
from transformers.trainer_callback import TrainerState

from smora_cli.checkpoint import checkpoint_dirs
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.fixtures import classifier_recipe


def test_trainer_state_loads_in_transformers(tmp_path, encoder_dir):
    out = tmp_path / "run"
    recipe = classifier_recipe(encoder_dir, tmp_path / "data", out, save_steps=3, log_steps=2)
    recipe["eval"]["at_end"] = False
    run(recipe_from_dict(recipe), show_progress=False, echo=lambda *_: None)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    states = {step: TrainerState.load_from_json(str(path / "trainer_state.json"))
              for step, path in checkpoint_dirs(out)}  # fmt: skip
    assert sorted(states) == [3, 6]
    for step, state in states.items():
        assert state.global_step == step and state.max_steps == 6 and state.save_steps == 3
        assert state.logging_steps == 2 and state.train_batch_size == 4
        # 4 examples per step out of 64 + 64 training examples
        assert state.epoch == pytest.approx(step * 4 / 128)
        assert state.num_train_epochs == 1 and state.best_metric is None
        expected = [e for e in logged if e["step"] <= step]
        assert [h["step"] for h in state.log_history] == [e["step"] for e in expected]
        assert [h["loss"] for h in state.log_history] == [e["loss"] for e in expected]
        assert [h["learning_rate"] for h in state.log_history] == [e["lr"] for e in expected]
