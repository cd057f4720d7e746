"""Merge configs (mergekit-like YAML) and their validation.

base_model: path/or/hub-id             # default: the adapters' recorded base model
models:
  - adapter: runs/sst2/adapter          # `model:` is accepted too (mergekit's name)
    parameters: {weight: 0.5, density: 0.7}
    task: sst2                          # MoRE adapters: whose rank map to use
merge_method: ties                      # fold | linear | task_arithmetic | ties |
                                        # dare_linear | dare_ties | mean
parameters: {lambda: 1.0, density: 0.5, seed: 0, majority_sign: total}
dtype: float32
output: model                           # model | adapter | peft
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smora_cli.errors import RecipeError, UserInputError
from smora_cli.utils.schema import (
    checked_fields,
    dataclass_from,
    describe,
    read_yaml,
    unknown_keys,
)

DELTA_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")
MERGE_METHODS = ("fold", *DELTA_METHODS, "mean")
# Methods whose merged delta is exactly low-rank (the concatenated factors), so an adapter
# can hold it; TIES and DARE sparsify the full matrices and only fit a model.
EXACT_LOW_RANK = ("linear", "task_arithmetic")


@dataclass
class SourceParameters:
    weight: float | None = None
    density: float | None = None


@dataclass
class Source:
    """One adapter to merge."""

    adapter: str = ""
    parameters: SourceParameters = field(default_factory=SourceParameters)
    task: str | None = None


@dataclass
class MergeParameters:
    """Method-wide parameters; `lambda` in YAML is `scale` here (a Python keyword)."""

    scale: float = 1.0
    density: float = 1.0
    seed: int = 0
    majority_sign: Literal["total", "frequency"] = "total"


@dataclass
class MergeConfig:
    models: list[Source]
    merge_method: Literal[MERGE_METHODS] = "linear"  # type: ignore[valid-type]
    base_model: str | None = None
    parameters: MergeParameters = field(default_factory=MergeParameters)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    output: Literal["model", "adapter", "peft"] = "model"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["parameters"]["lambda"] = data["parameters"].pop("scale")
        return data

    def resolved(self, base_model: str) -> MergeConfig:
        """This config as it ran: the base model it used, and local paths made absolute, so
        the copy saved beside the output reruns from any directory."""

        def absolute(path: str) -> str:
            local = Path(path).expanduser()
            return str(local.resolve()) if local.exists() else path

        return dataclasses.replace(
            self,
            base_model=absolute(base_model),
            models=[dataclasses.replace(m, adapter=absolute(m.adapter)) for m in self.models],
        )

    def weights(self) -> list[float]:
        """Per-adapter weights; unset ones default to 1/n for averages, 1 otherwise."""
        default = 1.0 / len(self.models) if self.merge_method in ("linear", "mean") else 1.0
        return [
            default if m.parameters.weight is None else m.parameters.weight for m in self.models
        ]

    def densities(self) -> list[float]:
        return [
            self.parameters.density if m.parameters.density is None else m.parameters.density
            for m in self.models
        ]


def load_merge_config(path: Path, *, check_paths: bool = True) -> MergeConfig:
    """Read and validate a merge YAML file.

    Raises:
        RecipeError: every problem, named by key path.
    """
    return merge_config_from_dict(
        read_yaml(path, "merge config"), source=str(path), check_paths=check_paths
    )


def merge_config_from_dict(
    data: Any, *, source: str | None = None, check_paths: bool = True
) -> MergeConfig:
    """Validate a parsed merge config; `check_paths` also requires the adapter folders."""
    if not isinstance(data, dict):
        raise RecipeError(
            "a merge config must be a mapping (base_model, models, merge_method, ...)",
            source=source,
        )
    data = dict(data)
    problems: list[str] = []
    problems += unknown_keys(data, {f.name for f in dataclasses.fields(MergeConfig)}, "")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        problems.append("models: a list of at least one {adapter: DIR} is required")
        models = []
    sources = [_source(raw, f"models.{i}", problems) for i, raw in enumerate(models)]
    top = checked_fields(
        MergeConfig,
        {k: v for k, v in data.items() if k not in ("models", "parameters")},
        "",
        problems,
    )
    params = _parameters(data.get("parameters") or {}, problems)
    if problems or top is None or params is None:
        raise RecipeError(problems, source=source)
    config = MergeConfig(models=sources, parameters=params, **top)
    problems += _rules(config, check_paths)
    if problems:
        raise RecipeError(problems, source=source)
    return config


def _parameters(raw: Any, problems: list[str]) -> MergeParameters | None:
    """Method-wide parameters, named as the file names them (`lambda`, never `scale`)."""
    if not isinstance(raw, dict):
        problems.append(f"parameters: must be a mapping, got {describe(raw)}")
        return None
    fields = {f.name for f in dataclasses.fields(MergeParameters)}
    names = {"lambda" if name == "scale" else name for name in fields}
    problems += unknown_keys(raw, names, "parameters.")
    found: list[str] = []
    params = dataclass_from(
        MergeParameters,
        {("scale" if key == "lambda" else key): v for key, v in raw.items() if key in names},
        "parameters",
        found,
    )
    problems += [p.replace("parameters.scale:", "parameters.lambda:") for p in found]
    return params


def _source(raw: Any, path: str, problems: list[str]) -> Source | None:
    if isinstance(raw, str):
        raw = {"adapter": raw}
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a mapping like {{adapter: DIR}}")
        return None
    if "model" in raw:  # mergekit's name for each merged input
        if "adapter" in raw:
            problems.append(f"{path}: give adapter or model (the same thing), not both")
            return None
        raw = {("adapter" if key == "model" else key): v for key, v in raw.items()}
    values = checked_fields(
        Source, {k: v for k, v in raw.items() if k != "parameters"}, path, problems
    )
    parameters = dataclass_from(
        SourceParameters, raw.get("parameters") or {}, f"{path}.parameters", problems
    )
    if values is None or parameters is None:
        return None
    if not values.get("adapter"):
        problems.append(f"{path}.adapter: required (an adapter directory)")
        return None
    return Source(parameters=parameters, **values)


def _rules(config: MergeConfig, check_paths: bool) -> list[str]:
    problems = []
    method, count = config.merge_method, len(config.models)
    if method == "fold" and count != 1:
        problems.append(f"merge_method: fold takes exactly one adapter, got {count}")
    if method != "fold" and count < 2:
        problems.append(f"merge_method: {method} combines several adapters; use fold for one")
    given = [("parameters.density", config.parameters.density)] + [
        (f"models.{i}.parameters.density", m.parameters.density)
        for i, m in enumerate(config.models)
        if m.parameters.density is not None
    ]
    for key, density in given:  # each named where the file sets it
        if not 0 < density <= 1:
            problems.append(f"{key}: must be in (0, 1], got {density}")
    for i, source in enumerate(config.models):
        if check_paths and not Path(source.adapter).expanduser().is_dir():
            problems.append(f"models.{i}.adapter: {source.adapter} is not a directory")
    if config.output != "model" and method in ("ties", "dare_linear", "dare_ties"):
        problems.append(
            f"output: {method} merges full weight matrices, which no low-rank "
            "adapter holds; use output: model (or linear/task_arithmetic/mean)"
        )
    return problems


@dataclass(frozen=True)
class MergeRequest:
    """What `smora merge` was asked: run `config`; with `per_task`, `config` folds one
    task-routed adapter and each of its tasks is folded into OUT_DIR/<task>/."""

    config: MergeConfig
    per_task: bool = False


def merge_request(
    config_file: Path | None,
    out_dir: Path,
    *,
    adapter: Path | None = None,
    task: str | None = None,
    per_task: bool = False,
    base: str | None = None,
    dtype: str = "float32",
    output: str = "model",
) -> MergeRequest:
    """The merge that `smora merge [CONFIG_FILE] OUT_DIR` with these flags asks for: the
    config file's, or a fold of one `adapter` (MoRE: of one `task`, or of each `per_task`).

    Raises:
        UserInputError: the config file and the fold flags are both given, or neither; or
            the flags make no valid fold (every problem named, as in a config file).
    """
    if config_file is not None:
        if adapter or task or per_task:
            raise UserInputError("a merge config replaces --adapter/--task/--per-task")
        return MergeRequest(load_merge_config(config_file))
    if adapter is None:
        if out_dir.is_file():  # `smora merge merge.yaml`: the config given, OUT_DIR forgotten
            raise UserInputError(f"OUT_DIR is missing: smora merge {out_dir} OUT_DIR")
        raise UserInputError("give a merge CONFIG.yaml, or --adapter DIR to fold one adapter")
    if per_task and task:
        raise UserInputError("--per-task folds every task of the adapter; drop --task")
    fold = {
        "base_model": base,
        "merge_method": "fold",
        "dtype": dtype,
        "output": output,
        "models": [{"adapter": str(adapter), "task": task}],
    }
    return MergeRequest(merge_config_from_dict(fold, source="command line"), per_task=per_task)
