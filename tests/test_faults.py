"""Faults on real processes: kill -9 during a checkpoint write, SIGTERM, disk errors.

A run that is killed, resumed, stopped by SIGTERM and resumed again must end with the same
adapter, bit for bit, as a run that was never interrupted.
"""

import errno
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
        match="cannot write the checkpoint of step 4 .*No space left "
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
