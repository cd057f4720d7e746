"""Inputs found by issue 17's red team (beyond the trial's list): each refused in one line
before anything is written, or handled as the user would expect."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smora_cli.adapters import AdapterConfig, attach, save_adapter
from smora_cli.adapters.io import read_adapter_config
from smora_cli.data.sources import load_task_split
from smora_cli.data.tasks import TaskSpec, resolve_task
from smora_cli.errors import AdapterError, DataError, UserInputError
from smora_cli.preflight import single_class_warnings
from smora_cli.recipe import SweepSection, recipe_from_dict
from smora_cli.sweep import cell_recipe, plan_cells, run_sweep, write_results
from smora_cli.utils.fs import write_failure
from smora_cli.utils.signals import GracefulStop, Interrupted
from tests import tiny_models as tm
from tests.cli_helpers import cli, nothing_left, recipe_file
from tests.fixtures import classifier_recipe, write_jsonl
from tests.test_locks import holder


@pytest.fixture
def recipe(tmp_path, encoder_dir):
    return recipe_file(tmp_path, encoder_dir, max_steps=2)


def test_null_text_is_refused_when_loaded_not_when_drawn(tmp_path):
    """A null text passed every check and stopped training at the step that drew it."""
    rows = [{"text": f"movie {i}", "label": i % 2} for i in range(6)]
    rows[3]["text"] = None
    task = resolve_task(
        TaskSpec(name="t", source=str(write_jsonl(tmp_path / "t.jsonl", rows)), labels=["a", "b"])
    )
    with pytest.raises(DataError) as info:
        load_task_split(task, "train", task_id=0, text_to_text=False)
    assert str(info.value) == (
        "task 't' (train): column 'text' is empty (null) in 1 row(s), the first being row 4; "
        "fill or drop them"
    )


def test_labels_written_as_floats_are_class_ids(tmp_path):
    """`"label": 1.0` was "outside the declared labels"."""
    rows = [{"text": f"movie {i}", "label": float(i % 2)} for i in range(6)]
    task = resolve_task(
        TaskSpec(
            name="t", source=str(write_jsonl(tmp_path / "t.jsonl", rows)), labels=["neg", "pos"]
        )
    )
    data = load_task_split(task, "train", task_id=0, text_to_text=False)
    assert [data[i]["label"] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    rows[0]["label"] = 0.5
    write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match="label 0.5 is outside the declared labels"):
        load_task_split(task, "train", task_id=0, text_to_text=False)


def test_a_task_whose_labels_are_all_one_class_is_reported(tmp_path):
    rows = [{"text": f"good movie {i}", "label": "pos"} for i in range(6)]
    task = resolve_task(
        TaskSpec(
            name="t", source=str(write_jsonl(tmp_path / "t.jsonl", rows)), labels=["neg", "pos"]
        )
    )
    data = load_task_split(task, "train", task_id=0, text_to_text=False)
    assert single_class_warnings([data]) == [
        "warning: every training example of task 't' is labelled 'pos': it can only learn to "
        "answer 'pos' (check its label column)"
    ]
    rows[0]["label"] = "neg"
    write_jsonl(tmp_path / "t.jsonl", rows)
    assert (
        single_class_warnings([load_task_split(task, "train", task_id=0, text_to_text=False)]) == []
    )


def test_a_missing_eval_split_is_named_before_training(tmp_path, recipe, monkeypatch, capsys):
    """Training ran to the end, then failed on the missing validation split."""
    (tmp_path / "data" / "sim" / "validation.jsonl").unlink()
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "eval.at_end=true")
    assert code == 2 and error == (
        "error: eval.split: task(s) ['sim'] have no 'validation' split, which the evaluation "
        "after training reads; map it with tasks.N.splits, choose another eval.split, or set "
        "eval.at_end: false"
    )
    assert nothing_left(tmp_path)


def test_a_model_folder_without_tokenizer_files(
    tmp_path,
    recipe,
    encoder_dir,
    monkeypatch,
    capsys,
):
    """transformers builds an empty tokenizer there: every word became [UNK], silently."""
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((encoder_dir / name).read_bytes())
    code, _, error = cli(monkeypatch, capsys, "train", recipe, f"model.name_or_path={folder}")
    assert code == 2 and error == (
        f"error: {folder} has no tokenizer files (tokenizer.json, tokenizer_config.json, "
        "vocab.txt, ...); set model.tokenizer to the folder or Hub id of its tokenizer"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.yaml", "weights-only"]
    code, out, _ = cli(
        monkeypatch,
        capsys,
        "train",
        recipe,
        "--quiet",
        f"model.name_or_path={folder}",
        f"model.tokenizer={encoder_dir}",
    )
    assert code == 0 and "adapter written to" in out


def test_task_names_in_any_script(tmp_path, recipe, monkeypatch, capsys):
    code, out, _ = cli(
        monkeypatch,
        capsys,
        "train",
        recipe,
        "--quiet",
        "tasks.0.name=情感",
        "tasks.1.name=café-sim",
        "eval.at_end=true",
    )
    assert code == 0
    report = json.loads((tmp_path / "run" / "eval_validation.json").read_text())
    assert set(report["scores"]) == {"情感", "café-sim"}
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "tasks.0.name=a b", "--dry-run")
    assert code == 2 and "tasks.0.name: must be a non-empty name of letters" in error


def test_resuming_past_max_steps_is_refused(tmp_path, recipe, monkeypatch, capsys):
    """A checkpoint at step 6 resumed with max_steps 4 ended a '4-step' run with 6 steps."""
    assert (
        cli(
            monkeypatch,
            capsys,
            "train",
            recipe,
            "--quiet",
            "train.max_steps=6",
            "train.save_steps=3",
        )[0]
        == 0
    )
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--resume", "train.max_steps=4")
    assert code == 2 and error == (
        f"error: cannot resume {tmp_path / 'run'} at step 6 with train.max_steps 4; set "
        "train.max_steps to at least 6, or use --overwrite"
    )
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


def test_an_adapter_from_a_newer_smora(tmp_path):
    model = attach(tm.llama(), AdapterConfig(method="smora", r=4, k=2))
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    config.update(smora_version="9.1.0", router_temperature=0.5)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError) as info:
        read_adapter_config(tmp_path / "a")
    assert "unknown adapter config keys ['router_temperature']" in str(info.value)
    assert str(info.value).endswith(
        "; it was written by smora 9.1.0, newer than this smora 0.1.0: upgrade smora to load it"
    )
    config.update(smora_version="0.0.1")  # an older writer: no upgrade advice
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError) as info:
        read_adapter_config(tmp_path / "a")
    assert "upgrade" not in str(info.value)


def test_merging_into_the_base_folder_and_without_a_tokenizer(tmp_path):
    from smora_cli.merging.config import merge_config_from_dict
    from smora_cli.merging.run import run_merge

    base = tmp_path / "base"
    tm.llama().save_pretrained(base)  # no tokenizer files
    model = attach(tm.llama(), AdapterConfig(method="lora", r=4))
    tm.randomize_adapter(model)
    save_adapter(model, tmp_path / "lora")
    config = merge_config_from_dict(
        {
            "base_model": str(base),
            "merge_method": "fold",
            "models": [{"adapter": str(tmp_path / "lora")}],
        }
    )
    weights = (base / "model.safetensors").read_bytes()
    with pytest.raises(UserInputError, match="OUT_DIR .*base holds the merge's input base_model"):
        run_merge(config, base, overwrite=True)
    assert (base / "model.safetensors").read_bytes() == weights
    out = run_merge(config, tmp_path / "merged", echo=lambda *_: None)
    assert not any((out / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    merged = load_file(out / "model.safetensors")
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"],
        load_file(base / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"],
    )


def test_per_task_export_checks_every_folder_before_writing(tmp_path):
    from smora_cli.merging.config import merge_request
    from smora_cli.merging.run import export_per_task

    base = tmp_path / "base"
    tm.llama().save_pretrained(base)
    save_adapter(
        attach(tm.llama(), AdapterConfig(method="more", r=4, task_names=["x", "y"])),
        tmp_path / "more",
    )
    (tmp_path / "out" / "y").mkdir(parents=True)
    (tmp_path / "out" / "y" / "notes.txt").write_text("mine")
    fold = merge_request(None, tmp_path / "out", adapter=tmp_path / "more", base=str(base))
    with pytest.raises(UserInputError, match="out/y is not the output of a smora merge"):
        export_per_task(fold.config, tmp_path / "out", overwrite=True, echo=lambda *_: None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["y"]  # x not written


def test_a_sweep_cell_busy_in_another_process(tmp_path, encoder_dir):
    base = recipe_from_dict(classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "x"))
    sweep = SweepSection(
        r=4,
        k=2,
        expert_ranks=[2],
        methods=["smora"],
        baselines=[],
        seeds=[0],
        output_dir=str(tmp_path / "sweep"),
    )
    cell = plan_cells(sweep, echo=lambda *_: None)[0]
    process = holder(tmp_path / "sweep" / "cells" / cell.name)
    try:
        messages = []
        records, paths = run_sweep(base, sweep, echo=messages.append)
        assert (records, paths) == ([], None)
        assert messages[0].startswith(
            f"skipping cell 0 (smora-p2-seed0): {tmp_path}/sweep/cells/smora-p2-seed0 is in use "
            f"by smora merge (pid {process.pid} on "
        )
        assert messages[-1] == "0 of 1 cells finished"
        with pytest.raises(UserInputError, match=f"in use by smora merge .pid {process.pid}"):
            run_sweep(base, sweep, cell_index=0, echo=lambda *_: None)
    finally:
        process.kill()
        process.wait()


def test_a_sweep_cell_always_evaluates(tmp_path, encoder_dir):
    """With eval.at_end: false in the base recipe, a finished cell crashed (no scores)."""
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "x")
    data["eval"]["at_end"] = False
    sweep = SweepSection(r=4, k=2, expert_ranks=[2], methods=["smora"], baselines=[], seeds=[0])
    cell = plan_cells(sweep, echo=lambda *_: None)[0]
    assert cell_recipe(recipe_from_dict(data), cell, tmp_path / "s").eval.at_end is True


def test_a_sweep_interrupted_while_plotting(tmp_path, monkeypatch):
    import smora_cli.sweep as sweep_module

    record = {
        "index": 0,
        "name": "smora-p1-seed0",
        "method": "smora",
        "expert_rank": 1,
        "experts": 4,
        "k": 2,
        "r": 4,
        "active_experts": 2,
        "seed": 0,
        "baseline": False,
        "tasks": {"t": 0.5},
        "average": 0.5,
        "trainable_params": 10,
        "activated_params": 5,
        "train_seconds": 1.0,
        "router_entropy": 0.9,
        "router_max_load": 0.3,
    }
    out = tmp_path / "sweep"
    out.mkdir()

    def interrupted_plot(records, path):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(sweep_module, "plot", interrupted_plot)
    with pytest.raises(Interrupted):
        write_results([record], ["t"], out)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "results.md"]
    assert json.loads((out / "results.json").read_text()) == [record]  # complete, no temporary


def test_a_second_ctrl_c_in_the_loop_names_itself():
    with pytest.raises(Interrupted) as info, GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first: finish the step, checkpoint
        os.kill(os.getpid(), signal.SIGINT)
    assert info.value.exit_code == 130 and str(info.value) == "SIGINT"


def test_write_failures_name_a_full_disk(tmp_path, monkeypatch):
    import errno
    import shutil

    error = OSError(errno.ENOSPC, "No space left on device")
    assert write_failure(error, "the final adapter", tmp_path) == (
        f"cannot write the final adapter in {tmp_path}: no space left on device"
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 2048))
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 9")
    assert write_failure(torch_error, "x", tmp_path) == (
        f"cannot write x in {tmp_path}: no space left on device (2 KiB free)"
    )


def test_a_run_directory_under_a_file(tmp_path):
    from smora_cli.utils.lock import DirectoryLock

    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(UserInputError) as info,
        DirectoryLock(tmp_path / "file" / "a" / "run", "train"),
    ):
        pass
    assert str(info.value) == f"cannot create {tmp_path}/file/a/run: {tmp_path}/file is a file"


def test_overwrite_cannot_take_a_run_from_a_live_process(tmp_path, encoder_dir):
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run", max_steps=2)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "resolved_recipe.yaml").write_text(yaml.safe_dump(data))
    process = holder(tmp_path / "run")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "smora_cli", "train", str(path), "--overwrite"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        process.kill()
        process.wait()
    assert done.returncode == 2 and f"is in use by smora merge (pid {process.pid}" in done.stderr
    assert (tmp_path / "run" / "resolved_recipe.yaml").is_file()  # not replaced
