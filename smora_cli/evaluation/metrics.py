"""Metrics by the names recipes use, computed offline by `evaluate` modules shipped in smora.

Every metric is an `evaluate.Metric` under `smora_cli/evaluation/metric_modules/<name>/<name>.py`,
loaded with `evaluate.load(<absolute path>)`. An absolute path never reaches the Hugging Face
hub (hub names such as "accuracy" fail offline) and cannot be shadowed by a folder of the same
name in the working directory. Loaded modules are cached per process.

    compute("f1", predictions=[0, 1, 1], references=[0, 1, 0])  # {"f1": 0.666, "f1_stderr": ...}
    primary_score("f1", {"f1": 0.666})                                # 0.666
    glue_average({"cola": {"matthews_correlation": 0.6}, "sst2": {"accuracy": 0.95}})

All scores are fractions (accuracy 0.8, not 80); nothing is multiplied by 100. Each score
comes with its standard error under `<key>_stderr` (see `smora_cli.evaluation.stderr`).
"""

from __future__ import annotations

import atexit
import importlib.util
import inspect
import logging
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from smora_cli.errors import UserInputError
from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS

if TYPE_CHECKING:
    import evaluate

logger = logging.getLogger(__name__)

MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"


@dataclass(frozen=True)
class MetricSpec:
    """How to compute one recipe metric.

    Attributes:
        module: name of the module folder (and script) under `metric_modules/`.
        key: the key of the module's result that is this metric's score.
        bootstrap: its standard error is bootstrapped (the module takes `bootstrap_iters`
            and `seed`); otherwise it is the analytic standard error of a mean.
        greater_is_better: the direction of the score, written into every results file as
            `higher_is_better` (True for every metric here).
    """

    module: str
    key: str
    bootstrap: bool = False
    greater_is_better: bool = True

    @property
    def path(self) -> Path:
        """Absolute path of the module script."""
        return MODULES_DIR / self.module / f"{self.module}.py"


METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec("smora_accuracy", "accuracy"),
    "f1": MetricSpec("smora_f1", "f1", bootstrap=True),
    "matthews": MetricSpec("smora_matthews", "matthews_correlation", bootstrap=True),
    # Both correlations come from one module, which returns both keys.
    "pearson": MetricSpec("smora_correlation", "pearson", bootstrap=True),
    "spearman": MetricSpec("smora_correlation", "spearmanr", bootstrap=True),
    "exact_match": MetricSpec("smora_exact_match", "exact_match"),
    "rouge_l": MetricSpec("smora_rouge", "rougeL"),
}

GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}

# GLUE counts MNLI once: its matched and mismatched scores are averaged into one task score.
_MNLI_PARTS = ("mnli_matched", "mnli_mismatched")

# One lock for loading and computing: an `evaluate` module instance keeps per-call state
# (its buffer of predictions), so two threads must not compute on the same instance at once.
_LOCK = threading.RLock()
_LOADED: dict[str, evaluate.EvaluationModule] = {}


def compute(
    metric: str,
    predictions: Any,
    references: Any,
    *,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, float | None]:
    """Compute a recipe metric and its standard error.

    Args:
        metric: a recipe metric name, one of `METRICS`.
        predictions: predicted labels, scores or strings (a list, NumPy array or tensor).
        references: the references, same length.
        bootstrap_iters: resamples of a bootstrapped standard error (0: none); `seed` seeds them.
        **kwargs: options of the metric module, e.g. `average="macro"` for "f1" or
            `ignore_case=True` for "exact_match".

    Returns:
        The module's results as plain floats, e.g. {"accuracy": 0.8, "accuracy_stderr": 0.02};
        a standard error that is undefined is None. "pearson" and "spearman" both return
        {"pearson": ..., "pearson_stderr": ..., "spearmanr": ..., "spearmanr_stderr": ...}.

    Raises:
        UserInputError: unknown metric, or no examples to score.
        ValueError: predictions and references differ in length.
    """
    spec = _spec(metric)
    predictions, references = _as_list(predictions), _as_list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"metric {metric!r}: {len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise UserInputError(
            f"metric {metric!r}: no examples to score (the evaluation set is empty)"
        )
    if spec.bootstrap:
        kwargs.update(bootstrap_iters=bootstrap_iters, seed=seed)
    module = load_module(spec.module)
    with _LOCK:
        raw = module.compute(predictions=predictions, references=references, **kwargs)
    return {key: None if value is None else float(value) for key, value in raw.items()}


def higher_is_better(key: str) -> bool:
    """Direction of a result key such as "matthews_correlation" (as the harness records it)."""
    return next(spec.greater_is_better for spec in METRICS.values() if spec.key == key)


def primary_score(metric: str, results: Mapping[str, float]) -> float:
    """The single number a sweep ranks by for `metric` (higher is better for every metric).

    Args:
        metric: a recipe metric name, one of `METRICS`.
        results: what `compute` returned (keys such as "matthews_correlation"); a result keyed
            by the recipe name itself (e.g. "matthews") is accepted too.

    Raises:
        UserInputError: unknown metric, or `results` lacks it.
    """
    return _result_value(metric, results)


def glue_task_score(task: str, results: Mapping[str, float]) -> float:
    """The one number GLUE reports for a task: the unweighted mean of the task's metrics.

    CoLA: Matthews correlation; MRPC, QQP: mean of accuracy and F1; STS-B: mean of Pearson and
    Spearman; the other tasks: accuracy. The score stays a fraction (not x100).

    Args:
        task: a GLUE task name, one of `GLUE_TASK_METRICS`.
        results: the task's results, keyed as `compute` returns them (e.g. "accuracy",
            "f1", "spearmanr") or by recipe metric name.

    Raises:
        UserInputError: unknown task, or a metric the task needs is missing from `results`.
    """
    if task not in GLUE_TASK_METRICS:
        raise UserInputError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASK_METRICS)}")
    context = f"GLUE task {task!r}"
    return fmean(_result_value(metric, results, context) for metric in GLUE_TASK_METRICS[task])


def glue_average(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE score: the unweighted mean of the task scores, MNLI counted once.

    As in the GLUE paper (Wang et al., 2019, section 4) and leaderboard: each task's score is
    `glue_task_score`; the MNLI matched and mismatched scores are first averaged into one MNLI
    score (only the one given counts when just one is present), and then every task, MNLI
    included, weighs the same. With all nine tasks this reproduces the leaderboard: BERT-large's
    published test results give 0.805 (80.5), while counting MNLI-m and MNLI-mm as two tasks would
    give 0.811. The diagnostic set (AX) is not part of the score and is not accepted. Tasks that
    are absent are simply not averaged, so a partial average is not comparable to the leaderboard.

    Args:
        per_task: results per GLUE task name, e.g. {"cola": {"matthews_correlation": 0.6}, ...}.

    Raises:
        UserInputError: `per_task` is empty, names an unknown task, or lacks a task's metric.
    """
    if not per_task:
        raise UserInputError("GLUE average of no tasks: give the results of at least one GLUE task")
    scores = {task: glue_task_score(task, results) for task, results in per_task.items()}
    mnli = [scores.pop(part) for part in _MNLI_PARTS if part in scores]
    if mnli:
        scores["mnli"] = fmean(mnli)
    return fmean(scores.values())


def load_module(name: str) -> evaluate.EvaluationModule:
    """The loaded `evaluate` module `metric_modules/<name>/<name>.py`, cached per process.

    Args:
        name: module folder name, e.g. "smora_accuracy" (see `MetricSpec.module`).
    """
    with _LOCK:
        if name not in _LOADED:
            _LOADED[name] = _load(MODULES_DIR / name / f"{name}.py")
        return _LOADED[name]


def _load(path: Path) -> evaluate.EvaluationModule:
    """Load a module script through `evaluate.load`, or directly when the HF cache is unwritable.

    `evaluate.load` copies the script into the modules cache (HF_MODULES_CACHE, by default
    $HF_HOME/modules) and creates a directory under the metrics cache (HF_METRICS_CACHE) even
    with `keep_in_memory=True`; on a read-only or missing-permission cache it raises OSError.
    Then the script is imported straight from the package and its metric class instantiated
    with a private temporary cache directory. The maths is the same either way.
    """
    import evaluate  # deferred: importing evaluate (datasets, pyarrow, pandas) takes seconds

    try:
        # keep_in_memory: predictions stay in memory, no Arrow cache files or file locks.
        return evaluate.load(str(path), keep_in_memory=True)
    except OSError as error:
        logger.warning(
            "evaluate.load(%s) could not use the Hugging Face cache (%s); importing directly",
            path,
            error,
        )
        return _load_directly(path)


def _load_directly(path: Path) -> evaluate.EvaluationModule:
    """Import a module script by file location and instantiate its metric class."""
    import evaluate

    module_name = f"_smora_metric_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    metric_cls = next(
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, evaluate.EvaluationModule)
        and not inspect.isabstract(obj)
    )
    return metric_cls(keep_in_memory=True, cache_dir=_private_cache_dir())


def _private_cache_dir() -> str:
    """A temporary directory for `evaluate`'s metric cache, removed at exit."""
    path = tempfile.mkdtemp(prefix="smora-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _spec(metric: str) -> MetricSpec:
    """The spec of a recipe metric name, or a UserInputError listing the known names."""
    try:
        return METRICS[metric]
    except (KeyError, TypeError):
        raise UserInputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}") from None


def _result_value(metric: str, results: Mapping[str, float], context: str | None = None) -> float:
    """Read `metric`'s score from `results` by its result key, else by its recipe name."""
    key = _spec(metric).key
    for candidate in (key, metric):
        if candidate in results:
            return float(results[candidate])
    where = f"{context}: " if context else ""
    raise UserInputError(
        f"{where}results have no {metric!r} score (key {key!r}); got {sorted(results)}"
    )


def _as_list(values: Any) -> list:
    """NumPy arrays, tensors and pandas series become lists; `evaluate` encodes lists reliably."""
    return values.tolist() if hasattr(values, "tolist") else list(values)
