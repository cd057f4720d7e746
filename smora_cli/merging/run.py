"""`smora merge`: fold adapters into base weights, or merge several task adapters into one.

Every adapter is loaded onto ONE copy of the base model in turn (which checks that it fits)
and detached again, keeping only its small adapter layers; merged deltas are then computed
layer by layer, so memory stays near one model plus the adapters' factors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.folding import (
    add_delta,
    attach_factors,
    check_foldable,
    task_factors,
    task_index,
    unload,
)
from smora_cli.adapters.inject import attach
from smora_cli.adapters.io import (
    adapter_state_dict,
    copy_adapter_state,
    load_adapter,
    read_adapter_config,
    write_adapter,
)
from smora_cli.adapters.layer import RankExpertLinear
from smora_cli.adapters.methods import method_of
from smora_cli.errors import AdapterError, JobError, UserInputError
from smora_cli.merging.combine import combine_deltas, mean_factors
from smora_cli.merging.config import EXACT_LOW_RANK, MergeConfig, MergeRequest
from smora_cli.models import combine_heads, resolve_model_path
from smora_cli.preflight import check_tokenizer_files
from smora_cli.utils.fs import WRITE_ERRORS, atomic_directory, clear_leftovers, write_failure
from smora_cli.utils.lock import DirectoryLock
from smora_cli.utils.log import quiet_libraries, warn

MERGE_RECIPE = "merge_config.yaml"
# Hyper-parameters that must agree for a factor-space mean (the seed of FlyLoRA's A may not).
MEAN_MUST_MATCH = (
    "method",
    "r",
    "k",
    "expert_rank",
    "num_experts",
    "task_names",
    "alpha",
    "use_rslora",
    "rank_scaling",
    "topk_by",
    "gate_uses_bias",
    "center_router_input",
)


def load_full_model(name_or_path: str) -> torch.nn.Module:
    """The base model with its own architecture class (so `from_pretrained` of the output
    gives the same class), in float32 for exact merging."""
    import transformers

    path = resolve_model_path(name_or_path)
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        architecture = (config.architectures or [None])[0]
        cls = getattr(transformers, architecture, None) if architecture else None
        return (cls or transformers.AutoModel).from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserInputError(
            f"cannot load base model {name_or_path!r}: {str(e).splitlines()[0]}"
        ) from e


def check_compatible(config: MergeConfig, adapters: list[AdapterConfig]) -> None:
    """Refuse adapters that cannot be merged together, naming what differs."""
    first = adapters[0]
    methods = sorted({a.method for a in adapters})
    if len(methods) > 1:
        raise AdapterError(
            f"the adapters use different methods ({', '.join(methods)}); merge "
            "adapters of one method"
        )
    bases = sorted({a.base_model_name_or_path for a in adapters if a.base_model_name_or_path})
    if len(bases) > 1 and config.base_model is None:
        raise AdapterError(
            f"the adapters were trained on different base models ({', '.join(bases)})"
        )
    for i, adapter in enumerate(adapters[1:], start=1):
        if sorted(_targets(adapter)) != sorted(_targets(first)):
            raise AdapterError(
                f"models.{i} adapts other modules than models.0; merge adapters "
                "with the same target_modules"
            )
        if config.merge_method == "mean":
            for key in MEAN_MUST_MATCH:
                if getattr(adapter, key) != getattr(first, key):
                    raise AdapterError(
                        f"models.{i}: {key} is {getattr(adapter, key)!r} but "
                        f"{getattr(first, key)!r} in models.0; a factor mean "
                        "needs identical shapes and routing"
                    )
    if config.merge_method != "mean":
        check_foldable(first.method)
    if config.output == "peft" and first.method != "lora" and config.merge_method == "mean":
        raise AdapterError(
            f"output: peft holds LoRA adapters only; a mean of {first.method} "
            "adapters is written with output: adapter"
        )


def _targets(adapter: AdapterConfig) -> list[str]:
    targets = adapter.target_modules
    return [targets] if isinstance(targets, str) else list(targets)


def shared_a_seeds(adapters: list[AdapterConfig]) -> str | None:
    """A warning when two or more adapters with a frozen random A (FlyLoRA) drew it from the
    same `a_seed`: their A matrices are then identical, which a study of merging task
    adapters must avoid; None otherwise."""
    seeds: dict[int, list[int]] = {}
    for i, adapter in enumerate(adapters):
        if not method_of(adapter.method).trains_a:
            seeds.setdefault(adapter.a_seed, []).append(i)
    shared = {seed: models for seed, models in seeds.items() if len(models) > 1}
    if not shared:
        return None
    groups = "; ".join(
        f"{', '.join(f'models.{i}' for i in models)} share a_seed {seed}"
        for seed, models in shared.items()
    )
    return (
        f"{groups}: their frozen A matrices are identical; train each task adapter with its "
        "own adapter.a_seed if the merge should combine distinct A"
    )


def run_merge(
    config: MergeConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    echo=print,
    warn: Callable[[str], None] = warn,
) -> Path:
    """Carry out a merge config, holding OUT_DIR's lock; returns the output directory.

    `warn` gets what the merge may not want (adapters that share a frozen A); `echo` the rest.

    Raises:
        UserInputError: OUT_DIR is taken (see `check_out_dir`), locked by another process,
            or the adapters cannot be merged.
        JobError: the output cannot be written (disk full); OUT_DIR is left as it was.
    """
    quiet_libraries()
    with DirectoryLock(out_dir, "merge"):
        check_out_dir(config, out_dir, overwrite)
        clear_leftovers(out_dir)  # of a merge killed while writing
        return _merge(config, out_dir, echo, warn)


def _merge(config: MergeConfig, out_dir: Path, echo, warn) -> Path:
    adapters = [read_adapter_config(Path(m.adapter)) for m in config.models]
    check_compatible(config, adapters)
    shared = shared_a_seeds(adapters)
    if shared:
        warn(shared)
    base_name = config.base_model or adapters[0].base_model_name_or_path
    if base_name is None:
        raise UserInputError("base_model: required (the adapters do not record their base model)")
    model = load_full_model(base_name)
    loaded = []
    for i, source in enumerate(config.models):
        load_adapter(model, source.adapter)
        try:
            task_id = task_index(model, source.task)
        except AdapterError as e:
            raise AdapterError(f"models.{i}.task: {e}") from e
        state = adapter_state_dict(model)
        loaded.append((unload(model), task_id, state))
    try:
        with atomic_directory(out_dir) as tmp:
            if config.merge_method == "mean":
                _write_mean(model, adapters[0], config, [s for *_, s in loaded], tmp)
            elif config.output == "model":
                _apply_deltas(config, loaded)
                _save_model(model, base_name, config.dtype, tmp)
            else:
                _write_low_rank(model, adapters[0], config, loaded, tmp)
            note = combine_heads([Path(m.adapter) for m in config.models], tmp)
            if note:
                echo(f"note: {note}")
            ran = config.resolved(base_name).to_dict()
            (tmp / MERGE_RECIPE).write_text(yaml.safe_dump(ran, sort_keys=False))
    except WRITE_ERRORS as e:
        raise JobError(write_failure(e, "the merge output", out_dir.parent)) from e
    echo(
        f"{config.merge_method} of {len(config.models)} adapter(s) written to {out_dir} "
        f"({config.output})"
    )
    return out_dir


def check_out_dir(config: MergeConfig, out_dir: Path, overwrite: bool) -> None:
    """OUT_DIR may be new, empty, or (with --overwrite) an earlier merge's output; never a
    file, something else the user has, or a folder holding the merge's own inputs.

    Raises:
        UserInputError: naming what OUT_DIR is and what to do instead.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"OUT_DIR {out_dir} is a file; give a directory to write into")
    for label, path in _inputs(config):
        if _within(path, out_dir):
            raise UserInputError(
                f"OUT_DIR {out_dir} holds the merge's input {label} ({path}); writing there "
                "would replace it; choose another OUT_DIR"
            )
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise UserInputError(
            f"{out_dir} exists and is not empty; pass --overwrite to replace an earlier "
            "merge output there, or choose another OUT_DIR"
        )
    if not (out_dir / MERGE_RECIPE).is_file():
        raise UserInputError(
            f"{out_dir} is not the output of a smora merge (it has no {MERGE_RECIPE}); "
            "--overwrite only replaces an earlier merge output; choose another OUT_DIR"
        )


def _inputs(config: MergeConfig) -> list[tuple[str, Path]]:
    inputs = [(f"models.{i}.adapter", Path(m.adapter)) for i, m in enumerate(config.models)]
    if config.base_model and Path(config.base_model).expanduser().exists():
        inputs.append(("base_model", Path(config.base_model)))
    return inputs


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    return path == folder or folder in path.parents


def _layer_deltas(config: MergeConfig, loaded) -> dict[str, tuple[RankExpertLinear, torch.Tensor]]:
    """path -> (a detached layer, merged ΔW [out, in])."""
    merged = {}
    weights, densities = config.weights(), config.densities()
    for path in loaded[0][0]:
        deltas = [
            layers[path].delta_weight(task_id).detach().float() for layers, task_id, _ in loaded
        ]
        if config.merge_method == "fold":
            delta = deltas[0]
        else:
            delta = combine_deltas(
                config.merge_method,
                deltas,
                weights,
                densities,
                scale=config.parameters.scale,
                majority_sign=config.parameters.majority_sign,
                generator_seed=_layer_seed(config.parameters.seed, path),
            )
        merged[path] = (loaded[0][0][path], delta)
    return merged


def _layer_seed(seed: int, path: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{path}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def _apply_deltas(config: MergeConfig, loaded) -> None:
    for layer, delta in _layer_deltas(config, loaded).values():
        add_delta(layer, delta)


def _save_model(model, base_name: str, dtype: str, directory: Path) -> None:
    model.to(getattr(torch, dtype)).save_pretrained(directory)
    from transformers import AutoTokenizer

    try:
        check_tokenizer_files(resolve_model_path(base_name), base_name)  # else an empty one
        AutoTokenizer.from_pretrained(resolve_model_path(base_name)).save_pretrained(directory)
    except (OSError, ValueError):
        pass  # models without a tokenizer (e.g. built from a config) merge all the same


@torch.no_grad()
def _write_low_rank(
    model, first: AdapterConfig, config: MergeConfig, loaded, directory: Path
) -> None:
    """Exact LoRA of the merge: A = [A_1; ...; A_n], B = [c_1 B_1 diag(g_1), ...], scaling 1."""
    if config.merge_method not in ("fold", *EXACT_LOW_RANK):
        raise AdapterError(f"{config.merge_method} cannot be written as an adapter")
    weights = [1.0] * len(loaded) if config.merge_method == "fold" else config.weights()
    scale = config.parameters.scale if config.merge_method == "task_arithmetic" else 1.0
    factors = {}
    for path in loaded[0][0]:
        a_parts, b_parts = [], []
        for (layers, task_id, _), weight in zip(loaded, weights, strict=True):
            a, b = task_factors(layers[path], task_id, weight * scale)
            a_parts.append(a)
            b_parts.append(b)
        factors[path] = (torch.cat(a_parts), torch.cat(b_parts, dim=1))
    attach_factors(model, factors, first.base_model_name_or_path)
    write_adapter(model, directory)


def _write_mean(model, first: AdapterConfig, config: MergeConfig, states, directory: Path) -> None:
    if config.output == "model":
        raise AdapterError(
            "a factor mean keeps the routers, so it is an adapter: use "
            "output: adapter (or peft for lora)"
        )
    averaged = mean_factors(states, config.weights())
    attach(model, first)
    copy_adapter_state(model, averaged, directory)
    write_adapter(model, directory)


def run_request(
    request: MergeRequest,
    out_dir: Path,
    *,
    overwrite: bool = False,
    echo=print,
    warn: Callable[[str], None] = warn,
) -> list[Path]:
    """What `smora merge` was asked: the request's merge into OUT_DIR, or (`per_task`) a
    fold of each task of its task-routed adapter into OUT_DIR/<task>/."""
    if request.per_task:
        return export_per_task(request.config, out_dir, overwrite=overwrite, echo=echo)
    return [run_merge(request.config, out_dir, overwrite=overwrite, echo=echo, warn=warn)]


def export_per_task(
    fold: MergeConfig, out_dir: Path, *, overwrite: bool = False, echo=print
) -> list[Path]:
    """MoRE: one folded model (or LoRA adapter) per task, in OUT_DIR/<task>/.

    Args:
        fold: the fold of one task-routed adapter (its task unset), as `merge_request` builds
            it; each task's fold is this one with the task set.
    """
    source = fold.models[0]
    adapter = read_adapter_config(Path(source.adapter))
    if not method_of(adapter.method).task_routed:
        raise AdapterError(
            f"--per-task exports task-routed adapters (more); this one is {adapter.method}"
        )
    configs = {
        task: dataclasses.replace(fold, models=[dataclasses.replace(source, task=task)])
        for task in adapter.task_names
    }
    for task, config in configs.items():  # every task's folder before writing any
        check_out_dir(config, out_dir / task, overwrite)
    return [
        run_merge(config, out_dir / task, overwrite=overwrite, echo=echo)
        for task, config in configs.items()
    ]
