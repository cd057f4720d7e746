"""Agreement of two training runs: per-step losses and adapter tensors, within a tolerance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from smora_cli.utils.log import METRICS_NAME


def read_losses(run_dir: Path) -> dict[int, float]:
    """{step: loss} from a run's metrics.jsonl (log_steps=1 gives every step)."""
    path = Path(run_dir) / METRICS_NAME
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(e["step"]): float(e["loss"]) for e in entries}


def loss_agreement(reference: dict[int, float], other: dict[int, float], rtol: float) -> dict:
    """Largest |other - reference| / |reference| over the steps both runs logged.

    Steps missing from `other` (a run that stopped early) fail the comparison.
    """
    missing = sorted(set(reference) - set(other))
    diffs = {
        step: abs(other[step] - reference[step]) / max(abs(reference[step]), 1e-12)
        for step in sorted(set(reference) & set(other))
    }
    worst_step, worst = _worst(diffs)
    finite = math.isfinite(worst)
    return {
        "max_rel_diff": worst if finite else None,
        "at_step": worst_step,
        "missing_steps": missing,
        "rtol": rtol,
        "ok": finite and worst <= rtol and not missing and bool(reference),
    }


def tensor_agreement(
    reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], rtol: float
) -> dict:
    """Largest ||other - reference|| / ||reference|| over tensors of the same name.

    A tensor that is zero in the reference is compared by its absolute norm; different key
    sets or shapes fail, naming the first difference.
    """
    if reference.keys() != other.keys():
        only = sorted(reference.keys() ^ other.keys())
        return {"ok": False, "rtol": rtol, "problem": f"different tensors, e.g. {only[0]}"}
    diffs = {}
    for key, expected in reference.items():
        got = other[key]
        if got.shape != expected.shape:
            problem = f"{key}: shape {tuple(got.shape)} vs {tuple(expected.shape)}"
            return {"ok": False, "rtol": rtol, "problem": problem}
        expected, got = expected.double(), got.double()
        diffs[key] = float((got - expected).norm()) / (float(expected.norm()) or 1.0)
    worst_key, worst = _worst(diffs)
    finite = math.isfinite(worst)
    return {
        "max_rel_diff": worst if finite else None,
        "worst_tensor": worst_key,
        "rtol": rtol,
        "ok": finite and worst <= rtol and bool(reference),
    }


def _worst(diffs: dict) -> tuple:
    """(key, value) of the largest difference; a NaN or inf counts as the largest."""
    worst_key, worst = None, 0.0
    for key, diff in diffs.items():
        if not math.isfinite(diff):
            return key, math.inf
        if diff > worst:
            worst_key, worst = key, diff
    return worst_key, worst


def adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(adapter_dir) / "adapter_model.safetensors")
