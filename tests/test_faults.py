"""Faults on real processes: kill -9 during a checkpoint write, SIGTERM, disk errors.

A run that is killed, resumed, stopped by SIGTERM and resumed again must end with the same
adapter, bit for bit, as a run that was never interrupted.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smora_cli.checkpoint import STATE_NAME, checkpoint_dirs
from smora_cli.errors import JobError
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.cli_helpers import cli, recipe_file
from tests.fixtures import classifier_recipe

COMPLETE = {
    STATE_NAME,
    "adapter_model.safetensors",
    "adapter_config.json",
    "optimizer.bin",
    "task_heads.safetensors",
}


def start(recipe_path, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "smora_cli", "train", str(recipe_path), "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_for(predicate, process, timeout=120.0, poll=0.0005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("condition not reached")


def assert_checkpoints_complete(run_dir):
    root = run_dir / "checkpoints"
    for path in root.iterdir() if root.is_dir() else []:
        if not path.name.startswith("."):
            assert COMPLETE <= {p.name for p in path.iterdir()}, f"incomplete {path}"


def test_kill9_sigterm_and_resume_end_where_an_uninterrupted_run_ends(tmp_path, encoder_dir):
    data = classifier_recipe(
        encoder_dir,
        tmp_path / "data",
        tmp_path / "reference",
        max_steps=12,
        save_steps=1,
        save_total_limit=None,
    )
    data["adapter"]["dropout"] = 0.1
    data["eval"]["at_end"] = False
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump(data))
    # The reference runs in the same kind of process (same thread count, same reductions).
    process = start(reference)
    assert process.wait(timeout=300) == 0, process.communicate()
    expected = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")

    run_dir = tmp_path / "faulty"
    data["train"]["output_dir"] = str(run_dir)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(data))

    # 1. kill -9 while a checkpoint is being written (its temporary directory exists).
    process = start(recipe_path)

    def writing():
        return any(p.name.startswith(".step-") for p in (run_dir / "checkpoints").glob(".*"))

    assert wait_for(writing, process), process.communicate()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert_checkpoints_complete(run_dir)
    killed_at = max((s for s, _ in checkpoint_dirs(run_dir)), default=0)

    # 2. resume, then SIGTERM (what SLURM sends before pre-emption): checkpoint and exit 143.
    process = start(recipe_path, "--resume")
    further = lambda: any(s > killed_at + 1 for s, _ in checkpoint_dirs(run_dir))  # noqa: E731
    assert wait_for(further, process, poll=0.01), process.communicate()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved; continue with --resume" in out
    assert_checkpoints_complete(run_dir)
    assert not (run_dir / "adapter").exists()

    # 3. resume to the end.
    process = start(recipe_path, "--resume")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    got = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_disk_full_during_a_checkpoint_keeps_the_last_good_one(tmp_path, encoder_dir, monkeypatch):
    data = classifier_recipe(
        encoder_dir, tmp_path / "data", tmp_path / "run", max_steps=4, save_steps=2
    )
    import smora_cli.adapters.io as adapter_io

    original = adapter_io.save_file
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # the first checkpoint succeeds, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(adapter_io, "save_file", full_disk)
    with pytest.raises(
        JobError,
        match="cannot write the checkpoint of step 4 .*no space left "
        "on device; last good checkpoint: .*step-2",
    ):
        run(recipe_from_dict(data), show_progress=False, echo=lambda *_: None)
    run_dir = tmp_path / "run"
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [2]
    assert not list((run_dir / "checkpoints").glob(".*")), "temporary checkpoint left behind"
    assert_checkpoints_complete(run_dir)


def test_output_dir_that_cannot_be_created(tmp_path, encoder_dir):
    (tmp_path / "file").write_text("not a folder")
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "file" / "run")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "smora_cli", "train", str(recipe_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "cannot create" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "file").read_text() == "not a folder"


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_divergence_names_a_finite_checkpoint_before_it(tmp_path, encoder_dir, monkeypatch, capsys):
    """Trial: at lr 1e30 the message called step-1 good although its weights were ~1e30."""
    recipe = recipe_file(tmp_path, encoder_dir, max_steps=6, save_steps=1, save_total_limit=None)
    run_dir = tmp_path / "run"
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--quiet", "train.lr=1e30")
    assert code == 1 and "non-finite training at step 2" in error
    assert error.endswith(
        "no good checkpoint (step-1 marked diverged). Lower train.lr (now 1e+30), then start "
        "again with --overwrite"
    )
    step1 = run_dir / "checkpoints" / "step-1"
    weights = load_file(step1 / "adapter_model.safetensors")
    assert max(float(t.abs().max()) for t in weights.values()) > 1e20  # finite, yet diverged
    assert (step1 / "diverged.json").is_file()

    # NaN at step 4: step-3 holds the weights that produced it, step-2 is the good one.
    import smora_cli.train as train_module

    original, calls = train_module.example_losses, {"n": 0}

    def nan_at_step_4(*args):
        losses, weights = original(*args)
        calls["n"] += 1
        return (losses * float("nan") if calls["n"] == 4 else losses), weights

    monkeypatch.setattr(train_module, "example_losses", nan_at_step_4)
    code, _, error = cli(
        monkeypatch, capsys, "train", recipe, "--quiet", "--overwrite", "train.max_grad_norm=null"
    )
    assert code == 1 and "non-finite training at step 4" in error
    assert f"last good checkpoint: {run_dir / 'checkpoints' / 'step-2'} (finite weights" in error
    assert error.endswith(
        "(step-3 marked diverged). Lower train.lr (now 0.005), set train.max_grad_norm (e.g. "
        "1.0; now off), then --resume continues from it"
    )
    monkeypatch.setattr(train_module, "example_losses", original)
    code, out, _ = cli(
        monkeypatch, capsys, "train", recipe, "--quiet", "--resume", "train.max_grad_norm=null"
    )
    assert code == 0 and "(step 2)" in out and "resumed from" in out


def test_a_damaged_checkpoint_is_named_and_the_previous_one_offered(
    tmp_path, encoder_dir, monkeypatch, capsys
):
    """Trial: a truncated optimizer.bin, then --resume, said "error: Invalid argument"."""
    recipe = recipe_file(tmp_path, encoder_dir, max_steps=3, save_steps=1)
    assert cli(monkeypatch, capsys, "train", recipe, "--quiet")[0] == 0
    step3 = tmp_path / "run" / "checkpoints" / "step-3"
    optimizer = step3 / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    before = tree(tmp_path / "run")
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--quiet", "--resume")
    aside = step3.with_name("damaged-step-3")
    assert code == 2 and error == (
        f"error: checkpoint {step3} is damaged: optimizer.bin cannot be read "
        f"([Errno 22] Invalid argument); move it aside (mv {step3} {aside}) and --resume "
        "continues from step-2"
    )
    assert tree(tmp_path / "run") == before
    step3.rename(aside)
    code, out, _ = cli(monkeypatch, capsys, "train", recipe, "--quiet", "--resume")
    assert code == 0 and "resumed from" in out and "(step 2)" in out


def test_disk_full_inside_torch_serialization(tmp_path, encoder_dir, monkeypatch, capsys):
    """Trial: a 5 MB tmpfs filled while torch wrote optimizer.bin -> a RuntimeError traceback.
    (The same run on a real 600 KB tmpfs gives this message; mounting needs root, so here
    torch's error and the empty disk are reproduced.)"""
    import shutil

    import torch as torch_module

    recipe = recipe_file(tmp_path, encoder_dir, max_steps=4, save_steps=2)
    original, calls = torch_module.save, {"n": 0}

    def full(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.bin"):
            calls["n"] += 1
            if calls["n"] == 2:
                monkeypatch.setattr(
                    shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(5 << 20, 5 << 20, 0)
                )
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:672] . unexpected pos 227520 vs 227412"
                )
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch_module, "save", full)
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--quiet")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert code == 1 and error == (
        f"error: cannot write the checkpoint of step 4 in {checkpoints}: no space left on "
        f"device (0 KiB free); last good checkpoint: {checkpoints / 'step-2'}"
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2"]
    assert_checkpoints_complete(tmp_path / "run")


def test_resume_and_overwrite_together_are_refused(tmp_path, encoder_dir, monkeypatch, capsys):
    recipe = recipe_file(tmp_path, encoder_dir, max_steps=2)
    assert cli(monkeypatch, capsys, "train", recipe, "--quiet")[0] == 0
    before = tree(tmp_path / "run")
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--resume", "--overwrite")
    assert code == 2 and error == (
        f"error: --resume (or train.resume) continues the run in {tmp_path / 'run'} and "
        "--overwrite replaces it; give only one of them"
    )
    assert tree(tmp_path / "run") == before


def test_two_trainings_into_one_directory(tmp_path, encoder_dir):
    """Trial: two runs a second apart both exited 0 and interleaved metrics.jsonl. Here both
    start at once: exactly one is refused, naming the other."""
    recipe = recipe_file(tmp_path, encoder_dir, max_steps=100000, save_steps=50, log_steps=1)
    run_dir = tmp_path / "run"
    processes = [start(recipe), start(recipe)]
    deadline = time.monotonic() + 120
    while all(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    loser = next(p for p in processes if p.poll() is not None)
    winner = next(p for p in processes if p is not loser)
    _, err = loser.communicate()
    assert loser.returncode == 2, err
    assert f"error: {run_dir} is in use by smora train (pid {winner.pid} on " in err
    assert "Traceback" not in err
    assert wait_for(lambda: (run_dir / "metrics.jsonl").is_file(), winner, poll=0.05)
    winner.send_signal(signal.SIGTERM)  # it checkpoints and stops
    winner.communicate(timeout=120)
    assert winner.returncode == 128 + signal.SIGTERM
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert steps == list(range(1, len(steps) + 1)), "one writer, steps in order"
    assert not (tmp_path / ".run.lock").exists()


def test_kill9_during_a_merge_keeps_the_earlier_output(tmp_path):
    """kill -9 while the merged model is being written: the earlier output stays whole,
    and the same command then completes and clears what the killed one left."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from smora_cli.adapters import AdapterConfig, attach, save_adapter
    from smora_cli.merging.config import merge_config_from_dict
    from smora_cli.merging.run import run_merge
    from tests import tiny_models as tm

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    base = LlamaForCausalLM(config)
    base.save_pretrained(tmp_path / "base")  # ~13 MB: long enough to be caught writing
    adapted = attach(base, AdapterConfig(method="lora", r=4, target_modules=["q_proj"]))
    tm.randomize_adapter(adapted)
    save_adapter(adapted, tmp_path / "adapter")
    out = tmp_path / "merged"
    command = [
        sys.executable,
        "-m",
        "smora_cli",
        "merge",
        "--adapter",
        str(tmp_path / "adapter"),
        "--base",
        str(tmp_path / "base"),
        str(out),
        "--overwrite",
    ]
    merge_config = merge_config_from_dict(
        {
            "base_model": str(tmp_path / "base"),
            "merge_method": "fold",
            "models": [{"adapter": str(tmp_path / "adapter")}],
        }
    )
    run_merge(merge_config, out, echo=lambda *_: None)
    earlier = tree(out)

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writing = lambda: any(tmp_path.glob(".merged.tmp-*/*"))  # noqa: E731
    assert wait_for(writing, process), process.communicate()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert tree(out) == earlier
    assert list(tmp_path.glob(".merged.tmp-*")), "the kill fell inside the write"

    run_merge(merge_config, out, overwrite=True, echo=lambda *_: None)  # what the command runs
    assert tree(out) == earlier  # the merge is deterministic
    assert not list(tmp_path.glob(".merged*")), "temporaries and lock cleared"


def test_kill9_during_a_sweep_cell_then_the_same_command_finishes(tmp_path, encoder_dir):
    recipe = recipe_file(tmp_path, encoder_dir, max_steps=12, save_steps=1, save_total_limit=None)
    out = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "smora_cli",
        "sweep-granularity",
        str(recipe),
        "--r",
        "4",
        "--k",
        "2",
        "--expert-ranks",
        "2",
        "--methods",
        "smora",
        "--baselines",
        "",
        "--seeds",
        "0",
        "--out",
        str(out),
    ]
    cell = out / "cells" / "smora-p2-seed0"
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert wait_for(lambda: len(checkpoint_dirs(cell)) >= 3, process, poll=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cell / "cell.json").exists() and not (out / "results.csv").exists()
    assert_checkpoints_complete(cell)

    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout and "1 of 1 cells finished" in done.stdout
    record = json.loads((cell / "cell.json").read_text())
    assert record["name"] == "smora-p2-seed0" and set(record["tasks"]) == {"sent", "sim"}
    steps = [json.loads(line)["step"] for line in (cell / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    assert not list((out / "cells").glob(".*")), "no lock left"
