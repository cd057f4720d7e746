"""Run directories and checkpoints: complete or absent, adapter-only, rotated, resumable.

A checkpoint is `<run>/checkpoints/step-<N>/`: Accelerate's `save_state` (optimizer, RNG
states) with the model weights replaced by the adapter files, plus `trainer_state.json` (a
`transformers.TrainerState`).
It is written into a temporary sibling directory and renamed into place, so a process killed
mid-write leaves no directory that `--resume` would trust. A checkpoint saved at or after
the weights that made training non-finite carries `diverged.json`, and `--resume` skips it.

One run at a time holds a run directory (`claimed_run_dir`, a lock file beside it); a run
that replaces another sets the old one aside and deletes it only once it has written
something itself, so an input error found while loading data or the model loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from smora_cli.errors import UserInputError
from smora_cli.recipe import RESOLVED_NAME, Recipe, TrainSection
from smora_cli.utils.accel import launch_rank
from smora_cli.utils.fs import atomic_write_text
from smora_cli.utils.lock import DirectoryLock
from smora_cli.utils.log import METRICS_NAME

CHECKPOINTS = "checkpoints"
STATE_NAME = "trainer_state.json"
DIVERGED_NAME = "diverged.json"
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
    """The newest checkpoint `--resume` may continue from (diverged ones are skipped)."""
    found = [(step, path) for step, path in checkpoint_dirs(run_dir) if not _diverged(path)]
    return found[-1] if found else None


def _diverged(path: Path) -> bool:
    return (path / DIVERGED_NAME).is_file()


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


def trainer_state(
    run_dir: Path, step: int, train: TrainSection, *, epoch: float, epochs: int
) -> dict:
    """The checkpoint's `trainer_state.json`: a `transformers.TrainerState` (HF's
    `TrainerState.load_from_json` reads it), with the run's logged steps so far as its
    `log_history`. smora evaluates at the end only, so there is no best metric yet.

    Args:
        epoch: passes over the training examples so far (the mixture may repeat small tasks).
        epochs: passes the whole run makes, rounded up.
    """
    return {
        "epoch": epoch,
        "global_step": step,
        "max_steps": train.max_steps,
        "logging_steps": train.log_steps,
        "eval_steps": train.max_steps,
        "save_steps": train.save_steps,
        "train_batch_size": train.batch_size,
        "num_train_epochs": epochs,
        "log_history": _log_history(run_dir, step),
        "best_metric": None,
        "best_model_checkpoint": None,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
    }


def _log_history(run_dir: Path, step: int) -> list[dict]:
    """metrics.jsonl entries up to `step`, under the names HF's Trainer logs them."""
    path = run_dir / METRICS_NAME
    if not path.is_file():  # nothing logged yet
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {
            "step": entry["step"],
            "loss": entry["loss"],
            "learning_rate": entry["lr"],
            "grad_norm": entry["grad_norm"],
        }
        for entry in entries
        if entry["step"] <= step
    ]


def check_run_dir(run_dir: Path, recipe: Recipe, *, overwrite: bool, resume: bool) -> str:
    """Decide what to do with `run_dir` without touching it: "create", "resume" or "replace".

    Every process calls this (it only reads), so all of them fail alike before any collective.

    Raises:
        UserInputError: the directory holds another run (without --overwrite/--resume), is not
            a smora run directory, or resuming would load checkpoints of another architecture.
    """
    if resume and overwrite:
        raise UserInputError(
            f"--resume (or train.resume) continues the run in {run_dir} and --overwrite "
            "replaces it; give only one of them"
        )
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
        _check_steps(run_dir, recipe)
        return "resume"
    if overwrite:
        return "replace"
    raise UserInputError(
        f"{run_dir} already holds a run; pass --resume to continue it or "
        "--overwrite to replace it (or set train.output_dir)"
    )


@contextlib.contextmanager
def claimed_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one run (on the launching rank 0 only) and tidy it on the way out.

    Inside, another `smora train` into the same directory is refused, naming this process.
    On exit, a run set aside by `--overwrite` is deleted if the new run wrote anything, or
    put back if it did not; a directory this run created and left empty is removed.

    Raises:
        DirectoryLocked: another live process holds the directory.
    """
    if launch_rank() != 0:
        yield
        return
    with DirectoryLock(run_dir, "train"):
        _settle_replaced(run_dir)  # left by a run killed before it finished setting up
        created = not run_dir.exists()
        try:
            yield
        finally:
            _settle_replaced(run_dir)
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()


def _replaced(run_dir: Path) -> Path:
    return run_dir.with_name(f".{run_dir.name}.replaced")


def _settle_replaced(run_dir: Path) -> None:
    aside = _replaced(run_dir)
    if not aside.is_dir():
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        shutil.rmtree(aside)
        return
    if run_dir.is_dir():
        run_dir.rmdir()
    os.replace(aside, run_dir)


def apply_run_dir_action(run_dir: Path, action: str) -> None:
    """Carry out `check_run_dir`'s decision (main process only)."""
    if action == "replace":  # deleted by `claimed_run_dir` once the new run writes
        aside = _replaced(run_dir)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(run_dir, aside)
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
    changed = sorted({key.split(".")[0] for key in recipe_changes(run_dir, recipe)})
    changed = [s for s in ARCHITECTURE_SECTIONS if s in changed]
    if changed:
        raise UserInputError(
            f"cannot resume {run_dir}: recipe section(s) {', '.join(changed)} "
            "differ from the run's resolved_recipe.yaml, so its checkpoints do "
            "not fit; use --overwrite or another output_dir"
        )


def _check_steps(run_dir: Path, recipe: Recipe) -> None:
    """A checkpoint past train.max_steps would end the run with more training than asked."""
    latest = latest_checkpoint(run_dir)
    if latest is not None and latest[0] > recipe.train.max_steps:
        raise UserInputError(
            f"cannot resume {run_dir} at step {latest[0]} with train.max_steps "
            f"{recipe.train.max_steps}; set train.max_steps to at least {latest[0]}, or "
            "use --overwrite"
        )


def recipe_changes(run_dir: Path, recipe: Recipe, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """`key: old -> new` for every value `recipe` changes against the run in `run_dir`
    (empty when the directory holds no run); sections in `ignore` are not compared."""
    path = run_dir / RESOLVED_NAME
    if not path.is_file():
        return []
    previous = yaml.safe_load(path.read_text()) or {}
    current = recipe.to_dict()
    if current["model"].get("chat_template") is None:  # "auto": the run resolved it
        current["model"]["chat_template"] = (previous.get("model") or {}).get("chat_template")
    old, new = _flat(previous), _flat(current)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key.split(".")[0] not in ignore and old.get(key) != new.get(key)
    ]


def _flat(tree, prefix: str = "") -> dict:
    """{"train.lr": 0.001, "tasks.0.name": "sst2", ...} of a nested recipe."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, dict | list) for v in tree):
        items = enumerate(tree)
    else:
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in items:
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


# ----------------------------------------------------------------- divergence
def after_divergence(run_dir: Path, step: int, train: TrainSection) -> str:
    """Mark the checkpoints a non-finite step makes useless; say where to go from here.

    The loss of step N is computed with the weights saved as step-(N-1), so that checkpoint
    and any later one hold diverging weights, however finite they look (lr 1e30 gives
    weights of 1e30 that overflow only in the next forward pass). An earlier checkpoint is
    good if its weights are finite. Marked checkpoints stay on disk; `--resume` skips them.
    """
    bad = []
    for saved, path in reversed(checkpoint_dirs(run_dir)):
        if saved < step - 1 and not _diverged(path) and _finite_weights(path):
            break
        bad.append(path.name)
        if launch_rank() == 0 and not _diverged(path):
            reason = {"step": step, "reason": "training became non-finite"}
            atomic_write_text(path / DIVERGED_NAME, json.dumps(reason) + "\n")
    advice = _stability_advice(train)
    good = latest_checkpoint(run_dir)
    skipped = f" ({', '.join(sorted(bad))} marked diverged)" if bad else ""
    if good is None:
        return f"no good checkpoint{skipped}. {advice}, then start again with --overwrite"
    return (
        f"last good checkpoint: {good[1]} (finite weights, saved before the divergence)"
        f"{skipped}. {advice}, then --resume continues from it"
    )


def _finite_weights(path: Path) -> bool:
    """Whether every saved weight of a checkpoint is finite (an unreadable one is not good)."""
    import torch
    from safetensors.torch import load_file

    try:
        return all(
            bool(torch.isfinite(tensor).all())
            for file in path.glob("*.safetensors")
            for tensor in load_file(str(file)).values()
        )
    except Exception:  # a damaged file: safetensors raises its own error types
        return False


def _stability_advice(train: TrainSection) -> str:
    changes = [f"lower train.lr (now {train.lr:g})"]
    if not train.max_grad_norm:
        changes.append("set train.max_grad_norm (e.g. 1.0; now off)")
    if train.mixed_precision == "fp16":
        changes.append("use train.mixed_precision bf16 (fp16 overflows at 65504)")
    text = ", ".join(changes)
    return text[0].upper() + text[1:]


# ------------------------------------------------------------------- damage
def load_state(accelerator, path: Path, *, load=None) -> None:
    """`accelerator.load_state`, naming a damaged file instead of failing inside torch.

    Args:
        load: reads the checkpoint instead of `accelerator.load_state` (`load(path)`; an FSDP
            model's checkpoint, which Accelerate's FSDP path cannot read).

    Raises:
        UserInputError: a file of the checkpoint cannot be read; the message offers the
            previous checkpoint.
    """
    try:
        if load is None:
            accelerator.load_state(str(path))
        else:
            load(path)
    except Exception as e:
        damaged = _damaged_file(path)
        if damaged is None:
            raise
        raise UserInputError(_damage_message(path, *damaged)) from e


def _damaged_file(path: Path) -> tuple[str, str] | None:
    """(file name, reason) of the first file of a checkpoint that cannot be read."""
    import torch
    from safetensors.torch import load_file

    for file in sorted(p for p in path.iterdir() if p.is_file()):
        try:
            if file.suffix == ".safetensors":
                load_file(str(file))
            elif file.suffix in (".bin", ".pkl", ".pt", ".pth"):
                torch.load(file, map_location="cpu", weights_only=False)  # our own file
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except Exception as e:  # every reader has its own error types
            text = str(e).strip()
            return file.name, (text.splitlines()[0][:150] if text else type(e).__name__)
    return None


def _damage_message(path: Path, name: str, reason: str) -> str:
    step = int(_STEP_DIR.fullmatch(path.name).group(1))
    earlier = [p for s, p in checkpoint_dirs(path.parent.parent) if s < step and not _diverged(p)]
    damaged = f"checkpoint {path} is damaged: {name} cannot be read ({reason})"
    if not earlier:
        return f"{damaged}; no earlier checkpoint to fall back to: start again with --overwrite"
    aside = path.with_name(f"damaged-{path.name}")
    return (
        f"{damaged}; move it aside (mv {path} {aside}) and --resume continues from "
        f"{earlier[-1].name}"
    )
