"""Run-or-resume decisions (smora_cli/study/execute.py) on fake run directories."""

import json
from pathlib import Path

import pytest

from smora_cli.checkpoint import CHECKPOINTS, DIVERGED_NAME, STATE_NAME
from smora_cli.errors import UserInputError
from smora_cli.recipe import RESOLVED_NAME
from smora_cli.study import execute
from smora_cli.study.plan import Study, plan_part
from smora_cli.utils.lock import DirectoryLocked


def router_run(tmp_path):
    return plan_part(Study(out=tmp_path), "decoder-router")[0]


def checkpoint(run_dir: Path, step: int) -> Path:
    path = run_dir / CHECKPOINTS / f"step-{step}"
    path.mkdir(parents=True)
    (path / STATE_NAME).write_text("{}")
    return path


def test_a_fresh_run_starts(tmp_path):
    assert execute.decide(router_run(tmp_path)) == execute.START


def test_a_run_with_a_checkpoint_resumes(tmp_path):
    run = router_run(tmp_path)
    (run.out).mkdir(parents=True)
    (run.out / RESOLVED_NAME).write_text("model: {}\n")
    checkpoint(run.out, 30)
    assert execute.decide(run) == execute.RESUME


def test_a_started_run_without_a_usable_checkpoint_restarts(tmp_path):
    run = router_run(tmp_path)
    run.out.mkdir(parents=True)
    (run.out / RESOLVED_NAME).write_text("model: {}\n")
    (run.out / CHECKPOINTS / "step-30.tmp").mkdir(parents=True)  # a save cut short
    assert execute.decide(run) == execute.RESTART
    diverged = checkpoint(run.out, 20)
    (diverged / DIVERGED_NAME).write_text("{}")  # not a checkpoint to resume from
    assert execute.decide(run) == execute.RESTART


def test_a_run_with_its_results_file_is_done_and_not_run_again(tmp_path, monkeypatch):
    run = router_run(tmp_path)
    checkpoint(run.out, 30)
    run.result.write_text(json.dumps({"results": {}, "config": {}}))
    assert execute.decide(run) == execute.DONE
    calls = []
    monkeypatch.setitem(execute.COMMANDS, run.command, lambda *a: calls.append(a))
    assert execute.run_one(run) == execute.DONE
    assert calls == []


def test_a_sweep_cell_is_decided_in_its_cell_directory(tmp_path):
    run = plan_part(Study(out=tmp_path), "decoder-granularity")[1]
    assert run.result.parent == tmp_path / "decoder-granularity" / "cells" / "smora-p1-seed1"
    checkpoint(run.result.parent, 50)
    assert execute.decide(run) == execute.RESUME


def test_a_command_that_ends_without_its_result_is_an_error(tmp_path, monkeypatch):
    run = router_run(tmp_path)
    monkeypatch.setitem(execute.COMMANDS, run.command, lambda *a: None)
    with pytest.raises(execute.Stopped, match="ended without"):
        execute.run_one(run, echo=lambda *a: None)


def test_select_one_cell_or_all(tmp_path):
    runs = plan_part(Study(out=tmp_path), "decoder-router")
    assert execute.select(runs, None) == runs
    assert execute.select(runs, 4) == [runs[4]]
    with pytest.raises(UserInputError, match=r"--cell 9 is out of range: the part has runs 0..8"):
        execute.select(runs, 9)


def test_wall_time_adds_up_over_invocations(tmp_path):
    execute.add_wall_time(tmp_path / "part", 60.0)
    execute.add_wall_time(tmp_path / "part", 30.5)
    data = json.loads((tmp_path / "part" / execute.WALL_TIME).read_text())
    assert data == {"seconds": 90.5, "invocations": 2}


def test_a_whole_part_leaves_a_run_another_process_holds_and_a_cell_refuses(tmp_path, monkeypatch):
    runs = plan_part(Study(out=tmp_path), "decoder-router")[:3]

    def fake(run, decision, echo):
        if run is runs[0]:
            raise DirectoryLocked(f"{run.out} is in use by smora train (pid 1)")
        run.result.parent.mkdir(parents=True)
        run.result.write_text("{}")

    monkeypatch.setitem(execute.COMMANDS, "train", fake)
    printed = []
    execute.run_all(runs, echo=lambda *parts: printed.append(" ".join(map(str, parts))))
    assert [execute.decide(run) for run in runs] == ["start", "done", "done"]
    assert f"skipping balance-1e-5-seed1: {runs[0].out} is in use by smora train (pid 1)" in printed
    with pytest.raises(DirectoryLocked):
        execute.run_all(runs[:1], echo=lambda *a: None, whole=False)
