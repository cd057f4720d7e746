"""`smora train` end to end on tiny models: artefacts, exact resume, signals, failures."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from smora_cli.adapters import load_adapter
from smora_cli.checkpoint import checkpoint_dirs
from smora_cli.errors import NonFiniteError, UserInputError
from smora_cli.models import load_base_model, load_heads
from smora_cli.optim import lr_factor
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import Trainer, run
from tests.fixtures import classifier_recipe, write_jsonl


def train(data: dict, overrides=(), **kwargs):
    return run(
        recipe_from_dict(data, list(overrides)), show_progress=False, echo=lambda *_: None, **kwargs
    )


def adapter_tensors(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_classifier_run_writes_everything(tmp_path, encoder_dir):
    out = tmp_path / "run"
    result = train(classifier_recipe(encoder_dir, tmp_path / "data", out, save_total_limit=1))
    assert result.status == "completed" and result.step == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter",
        "checkpoints",
        "eval_validation.json",
        "metrics.jsonl",
        "resolved_recipe.yaml",
    ]
    assert [step for step, _ in checkpoint_dirs(out)] == [6]  # save_total_limit=1 rotated 3
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [2, 4, 6]
    assert set(entries[-1]["task_loss"]) <= {"sent", "sim"}
    assert sum(entries[-1]["examples_seen"].values()) == 6 * 4
    assert 0 < entries[-1]["router"]["mean_entropy"] <= 1
    report = json.loads((out / "eval_validation.json").read_text())
    assert set(report["results"]) == {"sent", "sim"}
    assert report["n-samples"]["sent"] == {"original": 24, "effective": 24}
    assert "pearson" in report["results"]["sim"] and "pearson_stderr" in report["results"]["sim"]
    assert report["config"]["adapter"] == str(out / "adapter")
    assert report["config"]["batch_size"] == 16

    # The saved adapter + heads reproduce the trained model on a fresh base model.
    encoder = load_adapter(load_base_model(str(encoder_dir), kind="classifier"), out / "adapter")
    model = load_heads(encoder, out / "adapter").eval()
    from transformers import AutoTokenizer

    from smora_cli.data.collate import ClassifierCollator

    batch = ClassifierCollator(AutoTokenizer.from_pretrained(encoder_dir), 32)(
        [{"text": "good movie", "text_b": None, "label": 1, "task_id": 0}]
    )
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        task_ids=batch["task_ids"],
    )
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_training_learns_the_easy_task(tmp_path, encoder_dir):
    data = classifier_recipe(
        encoder_dir,
        tmp_path / "data",
        tmp_path / "run",
        max_steps=60,
        batch_size=8,
        lr=1e-2,
        save_steps=100,
        log_steps=10,
    )
    data["tasks"] = data["tasks"][:1]
    data["adapter"] = {"method": "lora", "r": 4, "alpha": 8}
    data["eval"]["baseline"] = True
    report = train(data).eval
    assert report["results"]["sent"]["accuracy"] >= 0.9
    # The untrained baseline is kept beside, in the same format.
    baseline = json.loads((tmp_path / "run" / "eval_validation_untrained.json").read_text())
    assert baseline["results"]["sent"]["accuracy"] < 0.8
    assert baseline["config"]["untrained"] and baseline["config"]["adapter"] is None


def test_resume_matches_uninterrupted_run_bitwise(tmp_path, encoder_dir, monkeypatch):
    recipe = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "full")
    recipe["adapter"]["dropout"] = 0.1  # dropout masks must continue from the saved RNG state
    recipe["eval"]["at_end"] = False
    train(recipe)
    expected = adapter_tensors(tmp_path / "full")

    recipe["train"]["output_dir"] = str(tmp_path / "cut")
    original = Trainer._optimizer_step

    def interrupted_step(self, step):
        stats = original(self, step)
        if step == 3 and not self.resume:  # SIGTERM arrives during the 4th step
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted_step)
    cut = train(recipe)
    assert (cut.status, cut.step, cut.exit_code) == ("interrupted", 4, 128 + signal.SIGTERM)
    assert [s for s, _ in checkpoint_dirs(tmp_path / "cut")] == [3, 4]
    assert not (tmp_path / "cut" / "adapter").exists()
    resumed = train(recipe, resume=True)
    assert resumed.status == "completed" and resumed.step == 6
    got = adapter_tensors(tmp_path / "cut")
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6]


def test_existing_run_is_protected(tmp_path, encoder_dir):
    recipe = classifier_recipe(
        encoder_dir, tmp_path / "data", tmp_path / "run", max_steps=2, save_steps=2
    )
    recipe["eval"]["at_end"] = False
    train(recipe)
    with pytest.raises(UserInputError, match="already holds a run; pass --resume"):
        train(recipe)
    changed = dict(recipe, adapter={"method": "lora", "r": 4})
    with pytest.raises(UserInputError, match="recipe section\\(s\\) adapter differ"):
        train(changed, resume=True)
    assert train(changed, overwrite=True).status == "completed"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    recipe["train"]["output_dir"] = str(tmp_path / "other")
    with pytest.raises(UserInputError, match="is not a smora run"):
        train(recipe, overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_non_finite_loss_stops_with_the_step(tmp_path, encoder_dir):
    recipe = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run", save_steps=1)
    write_jsonl(
        tmp_path / "data" / "sim" / "train.jsonl", [{"text": "a", "text_b": "b", "label": 3e38}] * 8
    )
    recipe["tasks"] = recipe["tasks"][1:]
    with pytest.raises(
        NonFiniteError, match="non-finite training at step 1 .*gradient: encoder[.]encoder[.]layer"
    ):
        train(recipe)
    assert checkpoint_dirs(tmp_path / "run") == []


def test_bad_task_files_are_clear(tmp_path, encoder_dir):
    from smora_cli.errors import DataError

    recipe = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run")
    write_jsonl(tmp_path / "data" / "sent" / "train.jsonl", [{"sentence": "x", "label": 1}])
    with pytest.raises(DataError, match=r"task 'sent' \(train\): missing column\(s\) \['text'\]"):
        train(recipe)
    (tmp_path / "data" / "sent" / "train.jsonl").write_text("")
    with pytest.raises(DataError, match="task 'sent'"):
        train(recipe, overwrite=True)
    write_jsonl(tmp_path / "data" / "sent" / "train.jsonl", [{"text": "x", "label": 7}])
    with pytest.raises(DataError, match="label 7 is outside the declared labels"):
        train(recipe, overwrite=True)
    write_jsonl(tmp_path / "data" / "sent" / "train.jsonl", [{"text": "x", "label": ""}])
    with pytest.raises(DataError, match="an empty label is outside"):
        train(recipe, overwrite=True)


def test_missing_or_empty_model_is_a_user_error(tmp_path, encoder_dir):
    recipe = classifier_recipe(tmp_path / "no-model", tmp_path / "data", tmp_path / "run")
    with pytest.raises(UserInputError, match="no-model does not exist"):
        train(recipe)
    (tmp_path / "empty-model").mkdir()
    recipe = classifier_recipe(tmp_path / "empty-model", tmp_path / "data", tmp_path / "run")
    with pytest.raises(UserInputError, match="empty-model has no tokenizer files"):
        train(recipe)


def test_lr_schedule():
    kwargs = {"max_steps": 100, "warmup_steps": 10}
    assert lr_factor(0, scheduler="cosine", **kwargs) == pytest.approx(0.1)
    assert lr_factor(9, scheduler="cosine", **kwargs) == pytest.approx(1.0)
    assert lr_factor(55, scheduler="cosine", **kwargs) == pytest.approx(0.5)
    assert lr_factor(55, scheduler="linear", **kwargs) == pytest.approx(0.5)
    assert lr_factor(99, scheduler="constant", **kwargs) == 1.0


def test_ctrl_c_checkpoints_then_exits_130(tmp_path, encoder_dir, monkeypatch):
    recipe = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run", save_steps=100)
    original = Trainer._optimizer_step

    def interrupted_step(self, step):
        stats = original(self, step)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return stats

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted_step)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or `cmd &`
    result = train(recipe)
    assert (result.status, result.step, result.exit_code) == ("interrupted", 2, 130)
    assert [s for s, _ in checkpoint_dirs(tmp_path / "run")] == [2]
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
