"""Experiment trackers (`train.log_with`): checked before anything loads, and given every
number `metrics.jsonl` holds.

Accelerate only warns about a tracker whose package is missing and trains untracked; a run
asked to log somewhere must not finish without having logged, so smora refuses it first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from smora_cli.errors import UserInputError

# Tracker -> (modules, any of which serves it; what to install).
TRACKER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "'smora-cli[tensorboard]'"),
    "wandb": (("wandb",), "'smora-cli[wandb]'"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "aim": (("aim",), "aim"),
    "clearml": (("clearml",), "clearml"),
    "dvclive": (("dvclive",), "dvclive"),
    "trackio": (("trackio",), "trackio"),
    "swanlab": (("swanlab",), "swanlab"),
}


def check_trackers(names: Iterable[str]) -> None:
    """Raises UserInputError naming what to install when a tracker's package is missing."""
    missing = [
        name
        for name in names
        if not any(importlib.util.find_spec(module) for module in TRACKER_PACKAGES[name][0])
    ]
    if missing:
        installs = " ".join(TRACKER_PACKAGES[name][1] for name in missing)
        raise UserInputError(
            f"train.log_with: {', '.join(missing)} is not installed; pip install {installs} "
            "(or remove it from train.log_with)"
        )


def tracker_scalars(entry: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a metrics.jsonl entry, nested keys joined by '/' (`task_loss/sst2`,
    `router/layers/<layer>/entropy`); the step is the trackers' own axis, not a scalar."""
    scalars = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if name == "step":
            continue
        if isinstance(value, dict):
            scalars.update(tracker_scalars(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            scalars[name] = value
    return scalars
