"""Evaluation results files: one format for `smora eval` and for the evaluation in `smora train`.

The keys are those of lm-evaluation-harness results files:

    results           {task: {"alias": task, <metric>: value, <metric>_stderr: value}}
    higher_is_better  {task: {<metric>: true}}
    n-samples         {task: {"original": examples in the split, "effective": examples scored}}
    config            model, kind, adapter, adapter_sha256, run_dir, split, limit, batch_size,
                      seed, bootstrap_iters, num_processes (and untrained: true for a baseline)
    versions          package versions
    date              ISO 8601, UTC

and smora's: `scores` (each task's score: the mean of its metrics, an undefined correlation
counting 0), `average` (their mean), `glue` ({score, tasks, missing} when GLUE tasks were
scored; leaderboard averaging, see `metrics.glue_average`) and `format`. A run directory holds
`eval_<split>.json`, the untrained baseline beside it as `eval_<split>_untrained.json`, and with
`--log-samples` one `eval_<split>_samples_<task>.jsonl` per task. Files written before this
format (`eval_results.json` of `smora train`, the first `eval_<split>.json`) are read by
`load_results`, converted.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from smora_cli.errors import UserInputError
from smora_cli.utils.jsonio import json_safe

FORMAT = "smora-eval/2"
LEGACY_FORMAT = "smora-eval/1"
LEGACY_NAME = "eval_results.json"  # what `smora train` wrote before this format
PACKAGES = ("smora-cli", "torch", "transformers", "datasets", "accelerate", "evaluate", "peft")
STDERR = "_stderr"


def results_path(run_dir: Path, split: str) -> Path:
    """Where a run's evaluation on `split` goes (both `smora train` and `smora eval RUN_DIR`)."""
    return Path(run_dir) / f"eval_{split}.json"


def untrained_path(path: Path) -> Path:
    """The untrained baseline's file beside a results file."""
    return path.with_name(f"{path.stem}_untrained{path.suffix}")


def samples_path(path: Path, task: str) -> Path:
    """The per-example predictions of `task` beside a results file."""
    return path.with_name(f"{path.stem}_samples_{task}.jsonl")


def find_results(run_dir: Path, split: str = "validation") -> Path | None:
    """A run's results file: `eval_<split>.json`, else one written before this format."""
    for path in (results_path(run_dir, split), Path(run_dir) / LEGACY_NAME):
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------- building
def eval_config(
    *,
    model: str,
    kind: str,
    adapter: Path | None,
    run_dir: Path | None,
    split: str,
    limit: int | None,
    batch_size: int,
    seed: int,
    bootstrap_iters: int,
    num_processes: int = 1,
    untrained: bool = False,
) -> dict:
    """The `config` block: what was scored (model, adapter and its hash) and how."""
    weights = Path(adapter) / "adapter_model.safetensors" if adapter is not None else None
    config = {
        "model": str(model),
        "kind": kind,
        "adapter": str(adapter) if adapter is not None else None,
        "adapter_sha256": file_sha256(weights) if weights is not None else None,
        "run_dir": str(run_dir) if run_dir is not None else None,
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
        "bootstrap_iters": bootstrap_iters,
        "num_processes": num_processes,
    }
    if untrained:
        config["untrained"] = True  # the freshly attached adapter (and heads), before step 0
    return config


def build_report(results: Mapping, config: dict, glue_names: Mapping[str, str]) -> dict:
    """The results file's content.

    Args:
        results: task name -> `TaskResult`.
        config: from `eval_config`.
        glue_names: task name -> GLUE task key (`mnli_matched`, ...) for the GLUE tasks.
    """
    from smora_cli.evaluation.metrics import GLUE_TASK_METRICS, glue_average, higher_is_better

    if not results:
        raise UserInputError("no task to evaluate")
    report = {
        "results": {name: {"alias": name, **r.metrics} for name, r in results.items()},
        "scores": {name: r.score for name, r in results.items()},
        "average": sum(r.score for r in results.values()) / len(results),
        "higher_is_better": {
            name: {key: higher_is_better(key) for key in r.metrics if not key.endswith(STDERR)}
            for name, r in results.items()
        },
        "n-samples": {
            name: {"original": r.n_original, "effective": r.n} for name, r in results.items()
        },
        "config": config,
        "versions": package_versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "format": FORMAT,
    }
    glue = {glue_names[name]: results[name].metrics for name in results if name in glue_names}
    if glue:
        report["glue"] = {
            "score": glue_average(glue),
            "tasks": sorted(glue),
            "missing": sorted(set(GLUE_TASK_METRICS) - set(glue)),
        }
    return report


def glue_names(tasks) -> dict[str, str]:
    """Task name -> GLUE task key for the resolved `Task`s read from GLUE (`glue:mnli` is
    scored on MNLI-matched)."""
    return {
        task.name: "mnli_matched" if task.location == "mnli" else task.location
        for task in tasks
        if task.source_kind == "glue"
    }


def package_versions() -> dict[str, str | None]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metric_values(report: dict, task: str) -> dict[str, float | None]:
    """A task's metric values, without their standard errors."""
    return {
        key: value
        for key, value in report["results"][task].items()
        if key != "alias" and not key.endswith(STDERR)
    }


# ------------------------------------------------------------------------- reading, writing
def write_results(report: dict, path: Path) -> None:
    """Strict JSON (NaN -> null), written atomically."""
    from smora_cli.utils.fs import atomic_write_text

    atomic_write_text(path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


def write_samples(path: Path, samples: list[dict]) -> None:
    from smora_cli.utils.fs import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(json_safe(s)) + "\n" for s in samples))


def load_results(path: Path) -> dict:
    """A results file in this format; files of the earlier format are converted.

    Raises:
        UserInputError: the file is missing, not JSON, or not a smora results file.
    """
    data = _read_json(path)
    if "results" in data and "config" in data:
        return data
    if "tasks" in data and "average" in data:
        return _from_legacy(data, data)
    raise UserInputError(f"{path} is not a smora results file (no `results` or `tasks`)")


def load_untrained(path: Path, report: dict | None = None) -> dict | None:
    """The untrained baseline kept beside a results file, if any; when `report` is given,
    only a baseline scored the same way (model, split, limit) is returned."""
    sibling = untrained_path(path)
    if sibling.is_file():
        baseline = load_results(sibling)
    elif path.is_file() and isinstance(_read_json(path).get("baseline"), dict):
        legacy = _read_json(path)  # the earlier train-time file nested its baseline
        baseline = _from_legacy(legacy["baseline"], legacy)
    else:
        return None
    if report is not None:
        keys = ("model", "split", "limit")
        if any(baseline["config"].get(k) != report["config"].get(k) for k in keys):
            return None
    return baseline


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserInputError(f"results file {path} not found") from e
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path} cannot be read as JSON: {e}") from e
    if not isinstance(data, dict):
        raise UserInputError(f"{path} is not a smora results file (not a JSON object)")
    return data


def _from_legacy(old: dict, provenance: dict) -> dict:
    """{split, tasks: {task: {metrics, score, n}}, average, model, ...} -> this format."""
    from smora_cli.evaluation.metrics import GLUE_TASK_METRICS, higher_is_better

    tasks = old["tasks"]
    config = {key: provenance.get(key) for key in ("model", "kind", "adapter", "adapter_sha256")}
    config.update(run_dir=provenance.get("run_dir"), split=provenance.get("split"))
    config.update(limit=None, batch_size=None, seed=None, bootstrap_iters=0)
    report = {
        "results": {t: {"alias": t, **r["metrics"]} for t, r in tasks.items()},
        "scores": {t: r["score"] for t, r in tasks.items()},
        "average": old["average"],
        "higher_is_better": {
            t: {key: higher_is_better(key) for key in r["metrics"]} for t, r in tasks.items()
        },
        "n-samples": {t: {"original": None, "effective": r["n"]} for t, r in tasks.items()},
        "config": config,
        "versions": provenance.get("versions", {}),
        "date": provenance.get("date"),
        "format": LEGACY_FORMAT,
    }
    if "glue_average" in old:
        report["glue"] = {
            "score": old["glue_average"],
            "tasks": old["glue_tasks"],
            "missing": sorted(set(GLUE_TASK_METRICS) - set(old["glue_tasks"])),
        }
    return report
