"""Tasks: what a recipe's `tasks:` entries mean, with presets for GLUE and the offline suite.

A task names its source and how to read it: input text column(s), label column, declared
label set, type (classification, regression, generation), metric(s) and split names.
`builtin:<name>` and `glue:<name>` sources fill every unset field from a preset.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from smora_cli.data.glue import GLUE_TASKS
from smora_cli.kinds import ModelKind

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
TaskType = Literal["classification", "regression", "generation"]
KNOWN_METRICS = ("accuracy", "f1", "matthews", "pearson", "spearman", "exact_match", "rouge_l")
REGRESSION_METRICS = ("pearson", "spearman")
SPLITS = ("train", "validation", "test")  # what `splits:` may map


@dataclass
class TaskSpec:
    """One entry of a recipe's `tasks:` list (see README "Recipe reference")."""

    name: str = ""
    source: str = ""
    subset: str | None = None
    data_dir: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    text: str | list[str] | None = None
    label: str | None = None
    labels: list[str] | None = None
    type: TaskType | None = None
    metric: str | list[str] | None = None
    prompt: str | None = None
    target: str | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None


@dataclass(frozen=True)
class Task:
    """A task with every field resolved (presets applied, defaults filled)."""

    name: str
    source_kind: Literal["builtin", "glue", "local", "hub"]
    location: str  # builtin/glue task name, local path, or Hub id
    subset: str | None
    data_dir: str | None
    splits: dict
    text_columns: tuple[str, ...]
    label_column: str | None
    label_names: tuple[str, ...] | None
    type: TaskType
    metrics: tuple[str, ...]
    prompt: str
    target_column: str | None
    max_train_examples: int | None
    max_eval_examples: int | None

    @property
    def num_labels(self) -> int:
        """Outputs of a classifier head: classes, or 1 for regression."""
        return len(self.label_names) if self.label_names else 1


def source_kind(source: str) -> Literal["builtin", "glue", "local", "hub"]:
    """How a `source:` string is read: a preset, a local path, or a Hub dataset id."""
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("glue:"):
        return "glue"
    path = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or _has_data_suffix(path)
    return "local" if looks_local or path.exists() else "hub"


def _has_data_suffix(path: Path) -> bool:
    suffixes = [s for s in path.suffixes if s not in COMPRESSION_SUFFIXES]
    return bool(suffixes) and suffixes[-1] in DATA_SUFFIXES


def _preset(spec: TaskSpec) -> TaskSpec:
    """The preset a `builtin:`/`glue:` source implies, as a TaskSpec of defaults."""
    kind, _, name = spec.source.partition(":")
    if kind == "glue":
        glue = GLUE_TASKS[name]
        return TaskSpec(
            text=list(glue.text_columns),
            label="label",
            labels=list(glue.label_names) if glue.label_names else None,
            type="classification" if glue.label_names else "regression",
            metric=list(glue.metrics),
            splits=dict(glue.hub_splits),
        )
    from smora_cli.data.offline import OFFLINE_TASKS

    offline = OFFLINE_TASKS[name]
    if offline.target_column:
        task_type = "generation"
    else:
        task_type = "classification" if offline.label_names else "regression"
    return TaskSpec(
        text=list(offline.text_columns),
        label="label",
        labels=list(offline.label_names) if offline.label_names else None,
        type=task_type,
        metric=offline.metric,
        target=offline.target_column,
        prompt=offline.prompt,
    )


def _with_preset(spec: TaskSpec) -> TaskSpec:
    if source_kind(spec.source) not in ("builtin", "glue"):
        return spec
    preset = _preset(spec)
    given = {k: v for k, v in vars(spec).items() if v not in (None, {}, [])}
    return replace(preset, **given)


def _infer_type(spec: TaskSpec) -> TaskType | None:
    if spec.type:
        return spec.type
    metrics = _as_list(spec.metric)
    if any(m in REGRESSION_METRICS for m in metrics):
        return "regression"
    if spec.labels:
        return "classification"
    if spec.target:
        return "generation"
    return None


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _default_metric(task_type: TaskType) -> list[str]:
    return {
        "classification": ["accuracy"],
        "regression": ["pearson", "spearman"],
        "generation": ["exact_match", "rouge_l"],
    }[task_type]


def _default_prompt(name: str, text_columns: list[str]) -> str:
    """T5-style input: `<task> <column>: {column} ...`."""
    return " ".join([name] + [f"{column}: {{{column}}}" for column in text_columns])


def complete_spec(spec: TaskSpec) -> TaskSpec:
    """The spec with presets applied and every default written out (the resolved recipe).

    Call only on specs that `task_problems` accepts.
    """
    spec = _with_preset(spec)
    task_type = _infer_type(spec)
    text = _as_list(spec.text) or ["text"]
    return replace(
        spec,
        text=text,
        label=spec.label or "label",
        type=task_type,
        labels=list(spec.labels) if spec.labels and task_type != "regression" else None,
        metric=_as_list(spec.metric) or _default_metric(task_type),
        prompt=spec.prompt or _default_prompt(spec.name, text),
        splits={"train": "train", "validation": "validation", "test": "test", **spec.splits},
    )


def resolve_task(spec: TaskSpec) -> Task:
    """The `Task` a (valid) spec describes."""
    spec = complete_spec(spec)
    kind = source_kind(spec.source)
    location = spec.source.partition(":")[2] if kind in ("builtin", "glue") else spec.source
    return Task(
        name=spec.name,
        source_kind=kind,
        location=location,
        subset=spec.subset,
        data_dir=spec.data_dir,
        splits=spec.splits,
        text_columns=tuple(spec.text),
        label_column=spec.label,
        label_names=tuple(spec.labels) if spec.labels else None,
        type=spec.type,
        metrics=tuple(spec.metric),
        prompt=spec.prompt,
        target_column=spec.target,
        max_train_examples=spec.max_train_examples,
        max_eval_examples=spec.max_eval_examples,
    )


def task_problems(spec: TaskSpec, model_kind: str) -> list[str]:
    """Problems of one task entry, each starting with its key (`source: ...`)."""
    if not spec.name or not re.fullmatch(r"[\w.-]+", spec.name):  # letters of any script
        return [f"name: must be a non-empty name of letters, digits, _ . -; got {spec.name!r}"]
    source_problem = _source_problem(spec)
    if source_problem:
        return [source_problem]
    spec = _with_preset(spec)
    task_type = _infer_type(spec)
    if task_type is None:
        return [
            "type: cannot tell the task type; declare `labels` (classification), "
            "`metric: pearson` (regression) or `target` (generation)"
        ]
    problems = []
    text = _as_list(spec.text) or ["text"]
    if len(text) > 2 and model_kind == ModelKind.CLASSIFIER:
        problems.append(f"text: a classifier takes one or two text columns, got {text}")
    if task_type == "classification" and (not spec.labels or len(spec.labels) < 2):
        problems.append(
            "labels: a classification task declares its label names (at least two), "
            "in label-id order"
        )
    repeated = sorted({label for label in spec.labels or [] if spec.labels.count(label) > 1})
    if repeated:
        problems.append(f"labels: {repeated} appear more than once; each class needs its own name")
    problems += _split_problems(spec.splits)
    if task_type == "generation" and model_kind == ModelKind.CLASSIFIER:
        problems.append("type: generation tasks need model.kind causal-lm or seq2seq")
    if task_type == "generation" and not spec.target:
        problems.append("target: a generation task names its target text column")
    for metric in _as_list(spec.metric):
        if metric not in KNOWN_METRICS:
            problems.append(f"metric: unknown metric {metric!r}; known: {', '.join(KNOWN_METRICS)}")
        elif task_type == "regression" and metric not in REGRESSION_METRICS:
            problems.append(
                f"metric: {metric} does not apply to a regression task (use pearson, spearman)"
            )
    if spec.prompt:
        unknown = set(re.findall(r"{(\w+)}", spec.prompt)) - set(text)
        if unknown:
            problems.append(f"prompt: placeholders {sorted(unknown)} are not text columns {text}")
    for key in ("max_train_examples", "max_eval_examples"):
        if getattr(spec, key) is not None and getattr(spec, key) < 1:
            problems.append(f"{key}: must be >= 1")
    return problems


def _split_problems(splits: dict[str, str]) -> list[str]:
    """`splits` maps the logical splits to the source's names; other keys are typos."""
    problems = []
    for key in splits:
        if key not in SPLITS:
            close = difflib.get_close_matches(key, SPLITS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"splits.{key}: unknown split{hint}; the keys are {', '.join(SPLITS)} "
                "(the values name the source's files or splits)"
            )
    return problems


def _source_problem(spec: TaskSpec) -> str | None:
    if not spec.source:
        return "source: required (builtin:<name>, glue:<name>, a local file/folder or a Hub id)"
    kind = source_kind(spec.source)
    name = spec.source.partition(":")[2]
    if kind == "glue" and name not in GLUE_TASKS:
        return f"source: unknown GLUE task {name!r}; known: {', '.join(GLUE_TASKS)}"
    if kind == "builtin":
        from smora_cli.data.offline import OFFLINE_TASKS

        if name not in OFFLINE_TASKS:
            return f"source: unknown builtin task {name!r}; known: {', '.join(OFFLINE_TASKS)}"
    if kind == "local" and not Path(spec.source).expanduser().exists():
        return f"source: {spec.source} does not exist"
    if spec.data_dir and not Path(spec.data_dir).expanduser().is_dir():
        return f"data_dir: {spec.data_dir} is not a directory"
    return None
