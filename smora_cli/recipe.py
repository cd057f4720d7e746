"""Recipes: one YAML file describes a run (model, adapter, tasks, mixing, train, eval).

`load_recipe(path, overrides)` reads YAML, applies `a.b=value` overrides, checks every key
and type against the dataclasses below and every cross-field rule, and raises one
`RecipeError` listing all problems, each named by its key path. Nothing heavy is imported:
validation runs before any model loads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from smora_cli.adapters.config import TARGET_ALL_LINEAR, AdapterConfig
from smora_cli.adapters.methods import method_of, methods_where
from smora_cli.data.tasks import TaskSpec, complete_spec, task_problems
from smora_cli.errors import AdapterConfigError, RecipeError, UserInputError
from smora_cli.kinds import KINDS, ModelKind
from smora_cli.utils.schema import (
    checked_fields,
    dataclass_from,
    describe,
    read_yaml,
    unknown_keys,
)

PACKAGED_CONFIGS = Path(__file__).parent / "configs"
QUICKSTART = PACKAGED_CONFIGS / "quickstart_lm.yaml"  # the decoder; quickstart.yaml: the encoder
RESOLVED_NAME = "resolved_recipe.yaml"
# Experiment trackers Accelerate can log to (each installed separately).
TRACKERS = (
    "tensorboard",
    "wandb",
    "mlflow",
    "comet_ml",
    "aim",
    "clearml",
    "dvclive",
    "trackio",
    "swanlab",
)


@dataclass
class ModelSection:
    """`model:` which transformers model to adapt and how to feed it."""

    name_or_path: str = ""
    gguf_file: str | None = None  # a GGUF checkpoint inside the folder name_or_path
    kind: Literal[KINDS] = ModelKind.CLASSIFIER.value  # type: ignore[valid-type]
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    tokenizer: str | None = None
    chat_template: bool | None = None  # None: on when the tokenizer has one (language models)
    max_length: int = 128
    target_max_length: int = 32
    pooling: Literal["mean", "cls"] = "mean"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False

    @property
    def source(self) -> str:
        """What the loaders read: `name_or_path`, or the GGUF file inside it."""
        if self.gguf_file:
            return str(Path(self.name_or_path) / self.gguf_file)
        return self.name_or_path


@dataclass
class MixingSection:
    """`mixing:` how often each task is sampled (rates in smora_cli.data.mixing)."""

    strategy: Literal["proportional", "capped", "temperature", "uniform", "more"] = "proportional"
    cap: int | None = None
    temperature: float = 1.0


@dataclass
class TrainSection:
    """`train:` the optimisation loop, checkpoints and logging."""

    output_dir: str | None = None
    max_steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3.0e-4
    router_lr: float | None = None
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_steps: int = 100
    save_total_limit: int | None = 2
    log_steps: int = 10
    log_with: list[str] = field(default_factory=list)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    resume: bool = False


@dataclass
class EvalSection:
    """`eval:` evaluation after training (and by `smora eval RUN_DIR`)."""

    split: str = "validation"
    batch_size: int = 64
    limit: int | None = None
    at_end: bool = True
    baseline: bool = False  # also score the untrained model before step 0


@dataclass
class SweepSection:
    """`sweep:` the granularity study of `smora sweep-granularity` (flags override it)."""

    r: int = 64  # total rank of every swept cell (adapter.r)
    k: int = 8  # activated rank of every swept cell (adapter.k)
    expert_ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    methods: list[str] = field(default_factory=lambda: ["smora", "moe-lora", "flylora"])
    baselines: list[str] = field(default_factory=lambda: ["lora:8", "lora:64"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    output_dir: str = "runs/sweep"


@dataclass
class Recipe:
    model: ModelSection
    adapter: AdapterConfig
    tasks: list[TaskSpec]
    mixing: MixingSection = field(default_factory=MixingSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    source: str | None = None  # the file it came from (not a recipe key)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @property
    def output_dir(self) -> Path:
        if self.train.output_dir:
            return Path(self.train.output_dir)
        stem = Path(self.source).stem if self.source else "run"
        return Path("runs") / stem


SECTIONS = {
    "model": ModelSection,
    "adapter": AdapterConfig,
    "tasks": TaskSpec,
    "mixing": MixingSection,
    "train": TrainSection,
    "eval": EvalSection,
    "sweep": SweepSection,
}
# PEFT spellings accepted as aliases of our adapter keys.
ADAPTER_ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout"}


# ---------------------------------------------------------------------------- loading
def load_recipe(path: str | os.PathLike | None, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; `path=None` means the packaged quickstart.

    Raises:
        RecipeError: listing every problem, each named by its key path.
    """
    path = Path(path) if path is not None else QUICKSTART
    return recipe_from_dict(read_yaml(path, "recipe"), overrides, source=str(path))


def recipe_arguments(first: str | None, rest: list[str] | None) -> tuple[Path | None, list[str]]:
    """A command's (recipe path, overrides) from its words: in `smora train train.lr=1e-4` the
    first word is an override, as it has an `=` and no file has that name."""
    overrides = list(rest or [])
    if first is not None and "=" in first and not Path(first).exists():
        return None, [first, *overrides]
    return (None if first is None else Path(first)), overrides


def recipe_from_dict(data: Any, overrides: list[str] = (), *, source: str | None = None) -> Recipe:
    """Build a validated `Recipe` from a parsed YAML tree plus overrides."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"a recipe must be a mapping of sections, got {type(data).__name__}", source=source
        )
    problems: list[str] = []
    for item in overrides:
        problems += apply_override(data, item)
    if problems:
        raise RecipeError(problems, source=source)
    recipe = _build(data, problems)
    if recipe is not None:
        recipe.source = source
        problems += cross_checks(recipe)
    if problems:
        raise RecipeError(problems, source=source)
    recipe.tasks = [complete_spec(task) for task in recipe.tasks]
    if recipe.adapter.base_model_name_or_path is None:  # recorded in the saved adapter
        recipe.adapter.base_model_name_or_path = recipe.model.source
    return recipe


def apply_override(data: dict, item: str) -> list[str]:
    """Apply one `a.b.c=value` override (value parsed as YAML) to the tree in place."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        return [f"override {item!r} must look like key.path=value (e.g. train.lr=1e-4)"]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        if raw.lstrip().startswith("["):  # meant as a list: a bare string would be a regex
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            return [
                f"override {key}: {raw!r} is not a valid YAML list ({problem}); "
                "write it like [q_proj,v_proj]"
            ]
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        path = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return [f"override {key}: {path} is not an index of a {len(node)}-item list"]
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return [f"override {key}: {'.'.join(parts[:depth])} is not a section"]
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            return [f"override {key}: {last} is not an index of a {len(node)}-item list"]
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return [f"override {key}: {'.'.join(parts[:-1])} is not a section"]
    return []


def _build(data: dict, problems: list[str]) -> Recipe | None:
    problems += unknown_keys(data, set(SECTIONS), "")
    sections: dict[str, Any] = {}
    for name in ("model", "mixing", "train", "eval", "sweep"):
        sections[name] = dataclass_from(SECTIONS[name], data.get(name, {}), name, problems)
    tasks = data.get("tasks")
    if tasks in (None, []):
        problems.append("tasks: at least one task is required (a list of {name, source, ...})")
    elif not isinstance(tasks, list):
        problems.append(
            f"tasks: must be a list of tasks, got {describe(tasks)}; write each task as a "
            "list item: [{name: ..., source: ...}, ...] (or `- name: ...` lines in YAML)"
        )
    if not isinstance(tasks, list):
        tasks = []
    sections["tasks"] = [
        dataclass_from(TaskSpec, t, f"tasks.{i}", problems) for i, t in enumerate(tasks)
    ]
    sections["adapter"] = _adapter_from(data.get("adapter", {}), sections["tasks"], problems)
    if problems or any(v is None for v in sections.values()) or None in sections["tasks"]:
        return None
    if not sections["model"].name_or_path:
        problems.append("model.name_or_path: required (a Hub id or a local model directory)")
        return None
    return Recipe(**sections)


def _adapter_from(raw: Any, tasks: list, problems: list[str]) -> AdapterConfig | None:
    if isinstance(raw, dict):
        raw = dict(raw)
        for alias, name in ADAPTER_ALIASES.items():
            if alias in raw:
                if name in raw:
                    problems.append(f"adapter: give either {name} or {alias}, not both")
                raw[name] = raw.pop(alias)
        routed = raw.get("method") in methods_where("task_routed")
        if routed and "task_names" not in raw and all(tasks):
            raw["task_names"] = [t.name for t in tasks]
    before = len(problems)
    values = checked_fields(AdapterConfig, raw, "adapter", problems)
    if values is None or len(problems) > before:
        return None
    try:
        return AdapterConfig(**values)
    except AdapterConfigError as e:
        problems += [f"adapter.{name}: {message}" for name, message in e.problems]
        return None


# ----------------------------------------------------------------------- cross checks
def cross_checks(recipe: Recipe) -> list[str]:
    """Rules that span fields or sections."""
    problems = []
    names = [t.name for t in recipe.tasks]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"tasks: task name {name!r} appears more than once")
    for i, task in enumerate(recipe.tasks):
        problems += [f"tasks.{i}.{p}" for p in task_problems(task, recipe.model.kind)]
    adapter = recipe.adapter
    problems += _module_pattern_problems(adapter)
    if method_of(adapter.method).task_routed and adapter.task_names != names:
        problems.append(
            f"adapter.task_names: must list the recipe's tasks {names} in order "
            "(leave it unset to fill it automatically)"
        )
    mixing, train = recipe.mixing, recipe.train
    if mixing.strategy == "capped" and (mixing.cap is None or mixing.cap < 1):
        problems.append("mixing.cap: the capped strategy needs a positive cap K")
    if not mixing.temperature > 0:
        problems.append(f"mixing.temperature: must be > 0, got {mixing.temperature}")
    positive = {
        "max_steps": train.max_steps,
        "batch_size": train.batch_size,
        "grad_accum": train.grad_accum,
        "save_steps": train.save_steps,
        "log_steps": train.log_steps,
    }
    problems += [f"train.{k}: must be >= 1, got {v}" for k, v in positive.items() if v < 1]
    if not train.lr > 0 or (train.router_lr is not None and not train.router_lr > 0):
        problems.append("train.lr / train.router_lr: learning rates must be > 0")
    if not 0 <= train.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio: must be in [0, 1), got {train.warmup_ratio}")
    if train.save_total_limit is not None and train.save_total_limit < 1:
        problems.append("train.save_total_limit: must be >= 1 (or null to keep all)")
    unknown_trackers = sorted(set(train.log_with) - set(TRACKERS))
    if unknown_trackers:
        problems.append(
            f"train.log_with: unknown tracker(s) {unknown_trackers}; known: {', '.join(TRACKERS)}"
        )
    problems += _model_source_problems(recipe.model)
    if recipe.model.max_length < 8:
        problems.append(f"model.max_length: must be >= 8, got {recipe.model.max_length}")
    if recipe.eval.batch_size < 1:
        problems.append("eval.batch_size: must be >= 1")
    return problems


def _module_pattern_problems(adapter: AdapterConfig) -> list[str]:
    """A string `target_modules`/`exclude_modules` is a regular expression: it must compile."""
    problems = []
    for key in ("target_modules", "exclude_modules"):
        pattern = getattr(adapter, key)
        if not isinstance(pattern, str) or pattern == TARGET_ALL_LINEAR:
            continue
        try:
            re.compile(pattern)
        except re.error as e:
            problems.append(
                f"adapter.{key}: {pattern!r} is not a valid regular expression ({e}); "
                "give module names as a list, e.g. [q_proj, v_proj]"
            )
    return problems


def _model_source_problems(model: ModelSection) -> list[str]:
    if model.chat_template and model.kind != ModelKind.CAUSAL_LM:
        return [f"model.chat_template: applies to causal-lm models, not {model.kind}"]
    path = model.name_or_path
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        return [f"model.name_or_path: {path} does not exist"]
    if model.source.endswith(".gguf") and model.kind != ModelKind.CAUSAL_LM:
        return [f"model.kind: a GGUF checkpoint is a causal-lm, got {model.kind}"]
    if model.gguf_file is None:
        return []
    if not Path(path).expanduser().is_dir():
        return [
            f"model.gguf_file: needs model.name_or_path to be a local folder holding it, got "
            f"{path!r} (download the file first, e.g. `hf download REPO {model.gguf_file}`)"
        ]
    if not Path(model.source).expanduser().is_file():
        return [f"model.gguf_file: {model.source} does not exist"]
    return []


def save_resolved(recipe: Recipe, directory: str | os.PathLike) -> Path:
    """Write `resolved_recipe.yaml` (what actually ran) into `directory`."""
    from smora_cli.utils.fs import atomic_write_text

    path = Path(directory) / RESOLVED_NAME
    atomic_write_text(path, recipe.to_yaml())
    return path


@dataclass
class RunSettings:
    """What scoring a finished run needs from the recipe it resolved."""

    model: ModelSection
    tasks: list[TaskSpec]
    eval: EvalSection


def read_run_settings(run_dir: str | os.PathLike) -> RunSettings:
    """The model, tasks and eval sections of a run's `resolved_recipe.yaml`, type-checked but
    not re-validated as a whole: the recipe was checked when the run started, and what it
    named since (a model folder, data files) may have moved without concerning a score.

    Raises:
        UserInputError: `run_dir` is not a run directory, or its recipe cannot be read.
    """
    path = Path(run_dir) / RESOLVED_NAME
    if not path.is_file():
        raise UserInputError(f"{run_dir} is not a smora run directory (no {RESOLVED_NAME})")
    data = read_yaml(path, "resolved recipe")
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a mapping of sections", source=str(path))
    problems: list[str] = []
    model = dataclass_from(ModelSection, data.get("model"), "model", problems)
    evaluation = dataclass_from(EvalSection, data.get("eval"), "eval", problems)
    tasks = data.get("tasks") if isinstance(data.get("tasks"), list) else []
    specs = [dataclass_from(TaskSpec, t, f"tasks.{i}", problems) for i, t in enumerate(tasks)]
    if problems or not specs:
        raise RecipeError(problems or ["tasks: the run names no task"], source=str(path))
    return RunSettings(model, specs, evaluation)
