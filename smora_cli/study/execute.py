"""Run or resume one run of the study through the library (no subprocess).

A run is done when its result file exists (skipped); a run directory with a checkpoint is
resumed; a started run with no checkpoint yet (killed before its first save) is restarted in
place; otherwise the run starts. `smora sweep-granularity --cell I` makes these decisions per
cell itself; `decide` only reports them. A finished run's checkpoints are deleted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from smora_cli.checkpoint import CHECKPOINTS, latest_checkpoint
from smora_cli.errors import Stopped, UserInputError
from smora_cli.recipe import RESOLVED_NAME
from smora_cli.study.plan import Run
from smora_cli.utils.fs import atomic_write_text
from smora_cli.utils.lock import DirectoryLocked

DONE, RESUME, RESTART, START = "done", "resume", "restart", "start"
WALL_TIME = "wall_time.json"


def decide(run: Run) -> str:
    """What running `run` now would do: done, resume, restart or start."""
    if run.result.is_file():
        return DONE
    run_dir = run.result.parent  # a train run's or a sweep cell's directory
    if latest_checkpoint(run_dir) is not None:
        return RESUME
    if (run_dir / RESOLVED_NAME).is_file():
        return RESTART
    return START


def run_one(run: Run, echo=print) -> str:
    """Run `run` unless it is done; returns the decision taken."""
    decision = decide(run)
    if decision == DONE:
        return decision
    echo(f"--- {run.name} ({decision}): {run.shell()}")
    COMMANDS[run.command](run, decision, echo)
    if not run.result.is_file():
        raise Stopped(f"{run.name} ended without {run.result}; run the same command again", 1)
    # A finished run keeps its adapter and results; its checkpoints (adapter plus optimizer
    # state, hundreds of MB on SmolLM2) only served resuming.
    shutil.rmtree(run.result.parent / CHECKPOINTS, ignore_errors=True)
    return decision


def run_all(runs: list[Run], echo=print, *, whole: bool = True) -> None:
    """Run `runs` in order. In a whole part a run that another process holds (the same
    part started twice, or a run started by hand) is left to it; a single `--cell` is
    refused instead."""
    for run in runs:
        try:
            run_one(run, echo)
        except DirectoryLocked as e:
            if not whole:
                raise
            echo(f"skipping {run.name}: {e}")


def _train(run: Run, decision: str, echo) -> None:
    from smora_cli.recipe import load_recipe
    from smora_cli.train import run as train

    recipe = load_recipe(run.positional[0], list(run.positional[1:]))
    result = train(
        recipe,
        resume=decision == RESUME,
        overwrite=decision == RESTART,
        show_progress=False,
        echo=echo,
    )
    if result.status != "completed":
        raise Stopped(
            f"{run.name} stopped at step {result.step} with a checkpoint; run the same command "
            "again to resume it",
            result.exit_code,
        )


def _sweep(run: Run, decision: str, echo) -> None:
    from smora_cli.recipe import load_recipe
    from smora_cli.sweep import run_sweep, sweep_section

    base = load_recipe(run.positional[0], list(run.positional[1:]))
    flags = {
        "expert_ranks": [int(p) for p in run.option("--expert-ranks").split(",")],
        "methods": run.option("--methods").split(","),
        "baselines": run.option("--baselines").split(","),
        "seeds": [int(s) for s in run.option("--seeds").split(",")],
        "output_dir": run.option("--out"),
    }
    run_sweep(
        base, sweep_section(base.sweep, flags), cell_index=int(run.option("--cell")), echo=echo
    )


def _merge(run: Run, decision: str, echo) -> None:
    from smora_cli.merging.config import merge_request
    from smora_cli.merging.run import run_request

    config_path, out = (Path(p) for p in run.positional)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, yaml.safe_dump(run.config, sort_keys=False))
    run_request(merge_request(config_path, out), out, echo=echo)


def _eval(run: Run, decision: str, echo) -> None:
    from smora_cli.evaluation.job import EvalRequest, run_eval

    limit, adapter = run.option("--limit"), run.option("--adapter")
    request = EvalRequest(
        run_dir=Path(run.positional[0]),
        model=run.option("--model"),
        adapter=None if adapter is None else Path(adapter),
        no_adapter="--no-adapter" in dict(run.options),
        output_path=Path(run.option("--output-path")),
        limit=None if limit is None else int(limit),
    )
    run_eval(request, echo=echo)


COMMANDS = {"train": _train, "sweep-granularity": _sweep, "merge": _merge, "eval": _eval}


def select(runs: list[Run], cell: int | None) -> list[Run]:
    """All runs, or only run number `cell` (`--cell I`, as `--list-cells` numbers them)."""
    if cell is None:
        return runs
    if not 0 <= cell < len(runs):
        raise UserInputError(f"--cell {cell} is out of range: the part has runs 0..{len(runs) - 1}")
    return [runs[cell]]


def add_wall_time(part_dir: Path, seconds: float) -> None:
    """Add `seconds` to the part's wall time over every invocation (the report shows it)."""
    path = part_dir / WALL_TIME
    data = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "invocations": 0}
    data["seconds"] += seconds
    data["invocations"] += 1
    part_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
