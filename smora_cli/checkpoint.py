"""Run directories and checkpoints: complete or absent, adapter-only, rotated, resumable.

A checkpoint is `<run>/checkpoints/step-<N>/`: Accelerate's `save_state` (optimizer, RNG
states) with the model weights replaced by the adapter files, plus `trainer_state.json`.
It is written into a temporary sibling directory and renamed into place, so a process killed
mid-write leaves no directory that `--resume` would trust.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from smora_cli.errors import UserInputError
from smora_cli.recipe import RESOLVED_NAME, Recipe

CHECKPOINTS = "checkpoints"
STATE_NAME = "trainer_state.json"
_STEP_DIR = re.compile(r"step-(\d+)")
# Recipe sections that decide the shapes of what a checkpoint holds.
ARCHITECTURE_SECTIONS = ("model", "adapter", "tasks")


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.fullmatch(path.name)
        if match and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def rotate(run_dir: Path, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond `keep` (None keeps all)."""
    if keep is None:
        return
    for _, path in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def clear_stale_temporaries(run_dir: Path) -> None:
    """Remove half-written checkpoint directories left by a killed process."""
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)


def write_state(directory: Path, state: dict) -> None:
    (directory / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")


def check_run_dir(run_dir: Path, recipe: Recipe, *, overwrite: bool, resume: bool) -> str:
    """Decide what to do with `run_dir` without touching it: "create", "resume" or "replace".

    Every process calls this (it only reads), so all of them fail alike before any collective.

    Raises:
        UserInputError: the directory holds another run (without --overwrite/--resume), is not
            a smora run directory, or resuming would load checkpoints of another architecture.
    """
    resolved = run_dir / RESOLVED_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"train.output_dir {run_dir} exists and is not a directory")
    has_content = run_dir.is_dir() and any(run_dir.iterdir())
    if not has_content:
        return "create"
    if not resolved.is_file():
        raise UserInputError(
            f"train.output_dir {run_dir} is not empty and is not a smora run; "
            "choose another output_dir"
        )
    if resume:
        _check_same_architecture(run_dir, recipe)
        return "resume"
    if overwrite:
        return "replace"
    raise UserInputError(
        f"{run_dir} already holds a run; pass --resume to continue it or "
        "--overwrite to replace it (or set train.output_dir)"
    )


def apply_run_dir_action(run_dir: Path, action: str) -> None:
    """Carry out `check_run_dir`'s decision (main process only)."""
    if action == "replace":
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create {run_dir}: {e.strerror or e}") from e
    probe = run_dir / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserInputError(f"cannot write to {run_dir}: {e.strerror or e}") from e


def publish(tmp: Path, final: Path) -> None:
    """Move a fully written checkpoint into place (replacing one of the same step)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def _check_same_architecture(run_dir: Path, recipe: Recipe) -> None:
    previous = yaml.safe_load((run_dir / RESOLVED_NAME).read_text()) or {}
    current = recipe.to_dict()
    if current["model"].get("chat_template") is None:  # "auto": the run resolved it
        current["model"]["chat_template"] = (previous.get("model") or {}).get("chat_template")
    changed = [s for s in ARCHITECTURE_SECTIONS if previous.get(s) != current.get(s)]
    if changed:
        raise UserInputError(
            f"cannot resume {run_dir}: recipe section(s) {', '.join(changed)} "
            "differ from the run's resolved_recipe.yaml, so its checkpoints do "
            "not fit; use --overwrite or another output_dir"
        )
