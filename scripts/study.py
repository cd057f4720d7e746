"""The evidence study of issue 9: `docs/results.md`, its figures and result summaries.

Four questions on one multi-task mixture of the five offline tasks (`configs/study/`) with the
pretrained all-MiniLM-L6-v2 encoder, scored on the test split, three seeds where a claim is
compared:

1. granularity: total rank 64 and activated rank 8 fixed, rank per expert p in {8, 4, 2, 1}
   for smora and moe-lora against LoRA r=8 and r=64 (`smora sweep-granularity`);
2. merging: one adapter per task (lora, flylora with one a_seed per task, flylora with one
   shared a_seed as the control), merged by mean / linear / TIES; each task's score drop;
3. more: MoRE against LoRA r=8 and a multi-LoRA MoE, its learned rank per task and layer, and
   the speed of a folded per-task model against the base model;
4. router: expert load over training with and without the balance bias (three seeds).

Commands (from the repository root; every part is resumable: the same command skips finished
runs, resumes an interrupted one from its checkpoint and redoes only missing analyses):

    python scripts/study.py all --quick --out /tmp/study-quick --docs /tmp/study-docs  # smoke test
    python scripts/study.py granularity      # 30 runs              ~85 min on an idle 2-core machine
    python scripts/study.py merging          # 33 runs + 15 merges  ~40 min
    python scripts/study.py more             # 9 runs, fold, timing ~25 min
    python scripts/study.py router           # 12 runs              ~33 min
    python scripts/study.py report           # docs/results.md, docs/figures/study_*.png,
                                             # docs/results/*.json|csv from what exists
    python scripts/study.py all              # the four parts, then the report (~3 h idle)
    nohup python scripts/study.py all > study.log 2>&1 &
    python scripts/study.py merging --list-cells   # a part's runs, numbered
    python scripts/study.py merging --cell 4       # one run only (split a part over sessions
                                                   # or a SLURM array); then the part without
                                                   # --cell does what is left and its analysis

Results go to `--out` (default runs/study: run directories, merged models, never committed);
`report` writes only small files under `--docs` (default docs). Checkpoints of finished runs
are deleted (the final adapter and eval_validation.json stay).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import yaml

from smora_cli.checkpoint import CHECKPOINTS
from smora_cli.errors import SmoraError, Stopped
from smora_cli.evaluation.results import find_results, load_results
from smora_cli.recipe import Recipe, SweepSection, load_recipe, recipe_from_dict
from smora_cli.sweep import CELL_FILE, Cell, cell_dir, cell_recipe, plan_cells
from smora_cli.train import ADAPTER_DIR

ROOT = Path(__file__).resolve().parent.parent
MIXTURE = ROOT / "configs" / "study" / "mixture.yaml"
SINGLE_TASK = ROOT / "configs" / "study" / "single_task.yaml"
PARTS = ("granularity", "merging", "more", "router")
STEP_TIMING = "step_timing.json"
MERGE_TASKS = ("sentiment", "subjectivity", "debate_party", "qa_topic")
# alpha = 2r: FlyLoRA's reference; LoRA r=32 in single_task.yaml uses the same alpha and r.
FLYLORA = {"method": "flylora", "r": 32, "k": 8, "alpha": 64.0}
# Adapter sets of the merging part -> (merge methods). FlyLoRA is token-routed, so only the
# factor-space mean applies; delta-space merges (linear, TIES) would need a fixed gate.
MERGE_SETS = {"lora": ("mean", "linear", "ties"), "flylora": ("mean",), "flylora-same-A": ("mean",)}
# The MoRE comparison at equal steps, data and alpha (MoRE's GLUE alpha 32 over R = 8):
# moe-lora = 4 experts of rank 4, top-2 (MoLoRA's shape), activated rank 8 = LoRA's r = MoRE's R.
MORE_ADAPTERS = {
    "more": {"method": "more", "r": 8, "k": None, "expert_rank": 1, "alpha": 32.0},
    "lora": {"method": "lora", "r": 8, "k": None, "expert_rank": 1, "alpha": 32.0},
    "moe-lora": {"method": "moe-lora", "r": 16, "k": 8, "expert_rank": 4, "alpha": 32.0},
}
# Rough cost model for the time estimates, idle 2-core machine, max_length 64: seconds per
# training example (measured: 15 steps of 32 on the mixture, smora r=64 1.25 s/step, moe-lora
# 1.3, LoRA r=8 0.95) and per evaluated example (~30 s for the 1.8k validation examples).
TRAIN_S_PER_EXAMPLE = {"smora": 0.040, "moe-lora": 0.041, "flylora": 0.030, "lora": 0.030}
EVAL_S_PER_EXAMPLE = 0.016
RUN_OVERHEAD_S = 12.0
TEST_SIZES = {  # test examples per task (README "Data"), for the estimates only
    "sentiment": 1262,
    "subjectivity": 252,
    "debate_party": 66,
    "lee_similarity": 235,
    "qa_topic": 71,
}


@dataclass(frozen=True)
class Settings:
    """What a full study and a `--quick` smoke test differ in (steps come from the recipes)."""

    seeds: tuple[int, ...] = (1, 2, 3)
    expert_ranks: tuple[int, ...] = (8, 4, 2, 1)
    balance_rates: tuple[float, ...] = (0.0, 1e-5, 1e-3, 1e-2)
    timing_repeats: int = 30
    timing_rounds: int = 9  # rounds of interleaved step timing per granularity configuration
    overrides: tuple[str, ...] = ()  # recipe overrides applied to every run


FULL = Settings()
QUICK = Settings(
    seeds=(1,),
    expert_ranks=(8, 1),
    balance_rates=(0.0, 1e-3),
    timing_repeats=3,
    timing_rounds=1,
    overrides=("train.max_steps=3", "train.save_steps=2", "train.log_steps=1", "eval.limit=24"),
)


@dataclass
class Study:
    """Where results go and how big the study is."""

    out: Path
    docs: Path
    settings: Settings
    quick: bool = False

    def part_dir(self, part: str) -> Path:
        return self.out / part


@dataclass(frozen=True)
class Job:
    """One training run of a part: its recipe, how to run it and how to tell it is done."""

    name: str
    recipe: Recipe
    run: Callable[[], object]
    done: Callable[[], bool]


@dataclass
class Part:
    """A part of the study: its runs, then an analysis over all of them."""

    jobs: list[Job]
    finish: Callable[[], None] = lambda: None
    finish_estimate_s: float = 0.0
    analysed: Path | None = None  # written last by `finish`: its analysis needs no more time


def echo(*parts: object) -> None:
    print(*parts, flush=True)


# --------------------------------------------------------------------------- recipes and runs
def recipe_tree(path: Path, study: Study) -> dict:
    """A recipe file resolved to a plain tree (every default written out), overrides applied."""
    return load_recipe(path, list(study.settings.overrides)).to_dict()


def build_recipe(tree: dict, run_dir: Path, **sections: dict | list) -> Recipe:
    """`tree` with some sections updated (dicts) or replaced (lists), run in `run_dir`."""
    data = copy.deepcopy(tree)
    for name, values in sections.items():
        if isinstance(values, dict):
            data[name].update(values)
        else:
            data[name] = values
    data["adapter"].pop("task_names")  # absent: refilled from the tasks for more
    data["train"]["output_dir"] = str(run_dir)
    return recipe_from_dict(data, source=f"study:{run_dir.name}")


def is_finished(run_dir: Path) -> bool:
    """A run is finished when its final adapter and its evaluation exist."""
    return find_results(run_dir) is not None and (run_dir / ADAPTER_DIR).is_dir()


def read_eval(run_dir: Path) -> dict:
    """The run's results file (per-task metrics and scores, average), older files converted."""
    return load_results(find_results(run_dir))


def prune_checkpoints(run_dir: Path) -> None:
    """A finished run keeps its final adapter and results; its checkpoints are only bulk."""
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


def train(recipe: Recipe) -> dict:
    """Train and evaluate one run (resuming a half-finished one); returns its results."""
    from smora_cli.train import run

    run_dir = recipe.output_dir
    if is_finished(run_dir):
        return read_eval(run_dir)
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    echo(
        f"--- {run_dir.name}: {recipe.adapter.method} r={recipe.adapter.r}"
        + (" (resuming)" if resume else "")
    )
    result = run(recipe, resume=resume, show_progress=False, echo=echo)
    if result.status != "completed":
        raise Stopped(
            f"{run_dir.name} stopped at step {result.step} with a checkpoint; run the same "
            "command again to resume it",
            result.exit_code,
        )
    prune_checkpoints(run_dir)
    return result.eval


def train_job(name: str, recipe: Recipe) -> Job:
    """A part's job that trains and evaluates `recipe` through `smora train`."""
    return Job(name, recipe, partial(train, recipe), partial(is_finished, recipe.output_dir))


def estimate_job_s(recipe: Recipe) -> float:
    """Rough seconds of one run on an idle 2-core machine (see TRAIN_S_PER_EXAMPLE)."""
    per_example = TRAIN_S_PER_EXAMPLE.get(recipe.adapter.method, 0.03)
    examples = recipe.train.max_steps * recipe.train.batch_size * recipe.train.grad_accum
    limit = recipe.eval.limit
    evaluated = sum(min(TEST_SIZES.get(t.name, 500), limit or 10**9) for t in recipe.tasks)
    return RUN_OVERHEAD_S + examples * per_example + evaluated * EVAL_S_PER_EXAMPLE


# --------------------------------------------------------------------------- 1. granularity
def granularity_sweep(study: Study) -> tuple[Recipe, SweepSection, list[Cell]]:
    """The mixture recipe and its `sweep:` section with the study's seeds and p values."""
    base = load_recipe(MIXTURE, list(study.settings.overrides))
    sweep = replace(
        base.sweep,
        expert_ranks=list(study.settings.expert_ranks),
        seeds=list(study.settings.seeds),
        output_dir=str(study.part_dir("granularity")),
    )
    return base, sweep, plan_cells(sweep, echo=lambda *_: None)


def run_grid_cell(base: Recipe, sweep: SweepSection, cell: Cell) -> None:
    """One cell through `smora sweep-granularity --cell I` (which also rewrites the tables)."""
    from smora_cli.sweep import run_sweep

    run_sweep(base, sweep, cell_index=cell.index, echo=echo)
    prune_checkpoints(cell_dir(Path(sweep.output_dir), cell))


def granularity_part(study: Study) -> Part:
    """The grid's cells as jobs; the analysis rewrites the sweep's tables."""
    base, sweep, cells = granularity_sweep(study)
    out = Path(sweep.output_dir)
    jobs = [
        Job(
            cell.name,
            cell_recipe(base, cell, out),
            partial(run_grid_cell, base, sweep, cell),
            partial(Path.is_file, cell_dir(out, cell) / CELL_FILE),
        )
        for cell in cells
    ]
    finish = partial(granularity_finish, base, sweep, cells, study.settings.timing_rounds)
    return Part(jobs, finish, 5.0 + 4.0 * study.settings.timing_rounds * len(cells) / 3)


def granularity_finish(
    base: Recipe, sweep: SweepSection, cells: list[Cell], timing_rounds: int
) -> None:
    """Rewrite the sweep's tables from every finished cell (cells may come from --cell runs),
    then time one training step of each configuration (once)."""
    from smora_cli.sweep import collect, write_results

    out = Path(sweep.output_dir)
    records = collect(cells, out)
    if records:
        write_results(records, [t.name for t in base.tasks], out)
    if not (out / STEP_TIMING).is_file():
        step_timing(base, cells, out, timing_rounds)


def cell_label(cell: Cell | dict) -> str:
    """'smora p=8', 'lora r=64': one configuration of the grid, whatever its seed."""
    get = cell.get if isinstance(cell, dict) else partial(getattr, cell)
    if get("baseline"):
        return f"lora r={get('r')}"
    return f"{get('method')} p={get('expert_rank')}"


def step_timing(base: Recipe, cells: list[Cell], out: Path, rounds: int, iters: int = 2) -> None:
    """Seconds per optimizer step of each configuration, all in one process, interleaved.

    The cells' own wall times depend on whatever else the machine ran meanwhile; here every
    configuration trains on the same mixture batches round-robin (starting at a rotating
    offset), so drift hits all alike; the median round is reported.
    """
    from smora_cli.train import Trainer

    scratch = out / "step-timing-runs"
    first_seed = {}
    for cell in cells:
        first_seed.setdefault(cell_label(cell), cell)
    trainers = {}
    for label, cell in first_seed.items():
        trainer = Trainer(
            cell_recipe(base, cell, scratch),
            overwrite=True,
            show_progress=False,
            echo=lambda *_: None,
        )
        trainer.setup()
        trainer.model.train()
        trainer._optimizer_step(0)  # warm-up
        trainers[label] = trainer
    times: dict[str, list[float]] = {label: [] for label in trainers}
    labels = list(trainers)
    for round_index in range(rounds):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            started = time.perf_counter()
            for i in range(iters):
                trainers[label]._optimizer_step(1 + round_index * iters + i)
            times[label].append((time.perf_counter() - started) / iters)
    result = {label: statistics.median(values) for label, values in times.items()}
    shutil.rmtree(scratch, ignore_errors=True)
    (out / STEP_TIMING).write_text(json.dumps(result, indent=2) + "\n")
    echo(f"step times written to {out / STEP_TIMING}")


# --------------------------------------------------------------------------- 2. merging
def a_seed(set_name: str, seed: int, task_index: int) -> int:
    """FlyLoRA's A seed: one per task and repetition, or the task-0 seed for the control.

    The control set shares task 0's adapter with the distinct set (same run directory)."""
    return 100 * seed + (task_index if set_name == "flylora" else 0)


def merge_run_dir(study: Study, set_name: str, task: str, seed: int, index: int) -> Path:
    """Run directory of one task adapter (FlyLoRA's is named by its A seed)."""
    if set_name == "lora":
        name = f"lora-{task}-seed{seed}"
    else:
        name = f"flylora-{task}-a{a_seed(set_name, seed, index)}-seed{seed}"
    return study.part_dir("merging") / "runs" / name


def merge_recipe(study: Study, tree: dict, set_name: str, task: str, seed: int) -> Recipe:
    """The single-task recipe of one adapter set, task and seed."""
    index = MERGE_TASKS.index(task)
    adapter = {"method": "lora", "k": None} if set_name == "lora" else dict(FLYLORA)
    if set_name != "lora":
        adapter["a_seed"] = a_seed(set_name, seed, index)
    return build_recipe(
        tree,
        merge_run_dir(study, set_name, task, seed, index),
        adapter=adapter,
        tasks=[{"name": task, "source": f"builtin:{task}"}],
        train={"seed": seed},
    )


def merging_recipes(study: Study) -> dict[tuple[str, str, int], Recipe]:
    """(set, task, seed) -> recipe; the control's task-0 runs are the distinct set's."""
    tree = recipe_tree(SINGLE_TASK, study)
    return {
        (set_name, task, seed): merge_recipe(study, tree, set_name, task, seed)
        for seed in study.settings.seeds
        for set_name in MERGE_SETS
        for task in MERGE_TASKS
    }


def merging_part(study: Study) -> Part:
    """Every distinct task adapter as a job; the analysis merges and scores them."""
    recipes = merging_recipes(study)
    unique = {recipe.output_dir: recipe for recipe in recipes.values()}
    jobs = [train_job(path.name, recipe) for path, recipe in unique.items()]
    merges = len(study.settings.seeds) * sum(len(m) for m in MERGE_SETS.values())
    per_merge = 20.0 + sum(min(TEST_SIZES[t], 500) for t in MERGE_TASKS) * EVAL_S_PER_EXAMPLE
    finish = partial(merging_finish, study, recipes)
    return Part(jobs, finish, merges * per_merge, study.part_dir("merging") / "results.json")


def merged_dir(study: Study, set_name: str, method: str, seed: int) -> Path:
    """Where one merge of one seed is written (deleted once scored)."""
    return study.part_dir("merging") / "merges" / f"seed{seed}" / f"{set_name}-{method}"


def merge_adapters(adapters: list[Path], method: str, target: Path) -> Path:
    """Merge task adapters with `smora merge` (TIES gives a full model, the others an adapter)."""
    from smora_cli.merging.config import merge_config_from_dict
    from smora_cli.merging.run import run_merge

    data = {
        "merge_method": method,
        "models": [{"adapter": str(path)} for path in adapters],
        "output": "model" if method == "ties" else "adapter",
    }
    if method == "ties":  # configs/merge.yaml's values: keep the top half, sum-elected sign
        data["parameters"] = {"lambda": 1.0, "density": 0.5, "majority_sign": "total"}
    config = merge_config_from_dict(data, source=f"study:{target.parent.name}/{target.name}")
    return run_merge(config, target, overwrite=True, echo=echo)


def load_encoder(merged: Path, base_model: str) -> torch.nn.Module:
    """The encoder of a merge output: base + merged adapter, or the merged model itself."""
    from smora_cli.adapters import load_adapter
    from smora_cli.models import load_base_model

    if (merged / "adapter_config.json").is_file():
        return load_adapter(load_base_model(base_model, kind="classifier"), merged)
    return load_base_model(str(merged), kind="classifier")


def score_with_heads(encoder: torch.nn.Module, recipe: Recipe, heads_dir: Path) -> dict:
    """Score every task of `recipe` with `encoder` and the task heads saved in `heads_dir`.

    Merged classifier adapters have no heads of their own: task t is read out by the head
    trained with task t's own adapter, as a merged model would be deployed."""
    from smora_cli.data.sources import load_task_split
    from smora_cli.data.tasks import resolve_task
    from smora_cli.evaluation.runner import evaluate_task
    from smora_cli.evaluation.scoring import Scorer
    from smora_cli.models import load_heads, load_tokenizer

    model = load_heads(encoder, heads_dir).eval()
    tokenizer = load_tokenizer(recipe.model.name_or_path, kind="classifier")
    scorer = Scorer(
        model,
        "classifier",
        tokenizer,
        max_length=recipe.model.max_length,
        target_max_length=recipe.model.target_max_length,
    )
    scores = {}
    for spec in recipe.tasks:
        task = resolve_task(spec)
        data = load_task_split(
            task,
            recipe.eval.split,
            task_id=model.task_names.index(spec.name),
            text_to_text=False,
            limit=recipe.eval.limit or task.max_eval_examples,
        )
        scores[spec.name] = evaluate_task(scorer, data, batch_size=recipe.eval.batch_size).score
    return scores


def merge_and_score(study: Study, recipes: dict, set_name: str, method: str, seed: int) -> dict:
    """Merge one set's task adapters and score every task against its own adapter."""
    target = merged_dir(study, set_name, method, seed)
    result_path = target.parent / f"{target.name}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    runs = [recipes[(set_name, task, seed)] for task in MERGE_TASKS]
    if not (target / "merge_config.yaml").is_file():
        merge_adapters([r.output_dir / ADAPTER_DIR for r in runs], method, target)
    encoder = load_encoder(target, runs[0].model.name_or_path)
    tasks = {}
    for recipe in runs:
        task = recipe.tasks[0].name
        own = read_eval(recipe.output_dir)["scores"][task]
        merged = score_with_heads(encoder, recipe, recipe.output_dir / ADAPTER_DIR)[task]
        tasks[task] = {"own": own, "merged": merged, "drop": own - merged}
    record = {"set": set_name, "merge": method, "seed": seed, "tasks": tasks}
    result_path.write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(target)  # merged models are reproducible bulk; the scores are the result
    echo(
        f"merged {set_name} by {method} (seed {seed}): "
        + ", ".join(f"{t} {v['own']:.3f}->{v['merged']:.3f}" for t, v in tasks.items())
    )
    return record


def merging_finish(study: Study, recipes: dict) -> None:
    """Merge and score every set by every applicable method, for every seed."""
    records = [
        merge_and_score(study, recipes, set_name, method, seed)
        for seed in study.settings.seeds
        for set_name, methods in MERGE_SETS.items()
        for method in methods
    ]
    path = study.part_dir("merging") / "results.json"
    path.write_text(json.dumps(records, indent=2) + "\n")


# --------------------------------------------------------------------------- 3. MoRE
def more_recipes(study: Study) -> dict[tuple[str, int], Recipe]:
    """(method, seed) -> recipe: the mixture with MoRE's task-homogeneous batches for all."""
    tree = recipe_tree(MIXTURE, study)
    runs = study.part_dir("more") / "runs"
    return {
        (name, seed): build_recipe(
            tree,
            runs / f"{name}-seed{seed}",
            adapter=dict(adapter),
            mixing={"strategy": "more"},
            train={"seed": seed},
        )
        for seed in study.settings.seeds
        for name, adapter in MORE_ADAPTERS.items()
    }


def more_part(study: Study) -> Part:
    """MoRE and its two baselines for every seed; the analysis reads, folds and times."""
    recipes = more_recipes(study)
    jobs = [train_job(r.output_dir.name, r) for r in recipes.values()]
    tasks = len(next(iter(recipes.values())).tasks)
    finish = partial(more_finish, study, recipes)
    return Part(jobs, finish, 40.0 + tasks * 20.0, study.part_dir("more") / "speed.json")


def load_trained_encoder(recipe: Recipe) -> torch.nn.Module:
    """The base encoder of `recipe` with the run's final adapter loaded."""
    from smora_cli.adapters import load_adapter
    from smora_cli.models import load_base_model

    base = load_base_model(recipe.model.name_or_path, kind=recipe.model.kind)
    return load_adapter(base, recipe.output_dir / ADAPTER_DIR)


def rank_maps(recipes: dict) -> dict[str, dict[str, dict[str, int]]]:
    """{seed: {task: {layer: rank}}} read from each trained MoRE adapter."""
    from smora_cli.adapters import rank_map

    return {
        str(seed): rank_map(load_trained_encoder(recipe))
        for (name, seed), recipe in recipes.items()
        if name == "more"
    }


def fold_per_task(recipe: Recipe, target: Path) -> list[str]:
    """`smora merge --adapter RUN/adapter --per-task TARGET`: one plain model per task."""
    from smora_cli.merging.run import export_per_task

    tasks = [t.name for t in recipe.tasks]
    if not all((target / task / "config.json").is_file() for task in tasks):
        export_per_task(
            recipe.output_dir / ADAPTER_DIR,
            target,
            base_model=None,
            dtype="float32",
            output="model",
            overwrite=True,
            echo=echo,
        )
    return tasks


def folded_scores(recipe: Recipe, target: Path) -> dict:
    """Each task scored by its folded model (plain encoder) against the routed adapter."""
    from smora_cli.models import load_base_model

    routed = read_eval(recipe.output_dir)["scores"]
    scores = {}
    for task in fold_per_task(recipe, target):
        encoder = load_base_model(str(target / task), kind="classifier")
        single = replace(recipe, tasks=[t for t in recipe.tasks if t.name == task])
        folded = score_with_heads(encoder, single, recipe.output_dir / ADAPTER_DIR)[task]
        scores[task] = {"routed": routed[task], "folded": folded}
    return scores


def more_finish(study: Study, recipes: dict) -> None:
    """Rank maps of every seed; for the first seed: folded models, their scores and speed."""
    part = study.part_dir("more")
    seed = study.settings.seeds[0]
    recipe = recipes[("more", seed)]
    folded = part / f"folded-seed{seed}"
    analyses = {
        "rank_maps.json": lambda: rank_maps(recipes),
        "folded_scores.json": lambda: folded_scores(recipe, folded),
        "speed.json": lambda: forward_speed(study, recipes, folded),
    }
    for name, compute in analyses.items():
        if not (part / name).is_file():
            (part / name).write_text(json.dumps(compute(), indent=2) + "\n")
    shutil.rmtree(folded, ignore_errors=True)  # ~90 MB per task; scores and speed are kept


def timing_batch(recipe: Recipe, size: int = 32) -> dict[str, torch.Tensor]:
    """`size` real test sentences of the first task, padded to max_length (fixed shape)."""
    from smora_cli.data.sources import load_task_split
    from smora_cli.data.tasks import resolve_task
    from smora_cli.models import load_tokenizer

    task = resolve_task(recipe.tasks[0])
    data = load_task_split(task, "test", task_id=0, text_to_text=False, limit=size)
    tokenizer = load_tokenizer(recipe.model.name_or_path, kind="classifier")
    texts = [data[i]["text"] for i in range(len(data))]
    batch = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=recipe.model.max_length,
        return_tensors="pt",
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def timing_cases(recipes: dict, folded: Path, seed: int) -> dict[str, Callable[[], None]]:
    """Forward passes to time: base encoder, folded task model, routed MoRE, unfolded LoRA."""
    from smora_cli.adapters import routing_context
    from smora_cli.models import load_base_model

    recipe = recipes[("more", seed)]
    batch = timing_batch(recipe)
    task = recipe.tasks[0].name
    models = {
        "base encoder": load_base_model(recipe.model.name_or_path, kind="classifier"),
        f"MoRE folded ({task})": load_base_model(str(folded / task), kind="classifier"),
        "MoRE routed (adapter)": load_trained_encoder(recipe),
        "LoRA r=8 (unfolded)": load_trained_encoder(recipes[("lora", seed)]),
    }
    task_ids = torch.zeros(batch["input_ids"].shape[0], dtype=torch.long)

    def forward(model: torch.nn.Module) -> None:
        with torch.inference_mode(), routing_context(model, task_ids=task_ids):
            model(**batch)

    return {name: partial(forward, model.eval()) for name, model in models.items()}


def forward_speed(study: Study, recipes: dict, folded: Path) -> dict:
    """Median forward time per case over interleaved rounds (rotating start), and its ratio."""
    seed = study.settings.seeds[0]
    fold_per_task(recipes[("more", seed)], folded)
    cases = timing_cases(recipes, folded, seed)
    names = list(cases)
    for fn in cases.values():  # warm-up: allocator, oneDNN kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(study.settings.timing_repeats):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            began = time.perf_counter()
            for _ in range(3):
                cases[name]()
            times[name].append((time.perf_counter() - began) / 3)
    base = statistics.median(times[names[0]])
    return {
        "batch": "32 x 64 tokens",
        "threads": torch.get_num_threads(),
        "repeats": study.settings.timing_repeats,
        "cases": {
            name: {"median_ms": 1e3 * statistics.median(t), "ratio": statistics.median(t) / base}
            for name, t in times.items()
        },
    }


# --------------------------------------------------------------------------- 4. router
def router_recipes(study: Study) -> dict[tuple[float, int], Recipe]:
    """SMoRA r=64, k=8 (the quickstart adapter) at each balance rate and seed."""
    tree = recipe_tree(MIXTURE, study)
    runs = study.part_dir("router") / "runs"
    return {
        (rate, seed): build_recipe(
            tree,
            runs / f"smora-balance{rate:g}-seed{seed}",
            adapter={"method": "smora", "r": 64, "k": 8, "expert_rank": 1, "balance_rate": rate},
            train={"seed": seed},
        )
        for rate in study.settings.balance_rates
        for seed in study.settings.seeds
    }


def router_part(study: Study) -> Part:
    """One smora run per balance rate and seed."""
    return Part([train_job(r.output_dir.name, r) for r in router_recipes(study).values()])


# --------------------------------------------------------------------------- running parts
BUILDERS: dict[str, Callable[[Study], Part]] = {
    "granularity": granularity_part,
    "merging": merging_part,
    "more": more_part,
    "router": router_part,
}


def print_plan(name: str, part: Part) -> None:
    """Print the part's runs, numbered as --cell takes them, done or estimated."""
    for index, job in enumerate(part.jobs):
        state = "done" if job.done() else f"~{estimate_job_s(job.recipe) / 60:.1f} min"
        echo(f"{index:3d}  {job.name:44s} {job.recipe.adapter.method:9s} {state}")


def print_estimate(name: str, part: Part) -> float:
    """Print and return the rough remaining time of a part on an idle 2-core machine."""
    todo = [job for job in part.jobs if not job.done()]
    seconds = sum(estimate_job_s(job.recipe) for job in todo)
    if part.analysed is None or not part.analysed.is_file():
        seconds += part.finish_estimate_s
    echo(
        f"== {name}: {len(part.jobs)} runs, {len(part.jobs) - len(todo)} finished; about "
        f"{seconds / 60:.0f} min left on an idle 2-core machine (slower when it is shared)"
    )
    return seconds


def add_wall_time(study: Study, part: str, seconds: float) -> None:
    """Accumulate the wall time spent on a part over every invocation (for the report)."""
    path = study.part_dir(part) / "wall_time.json"
    data = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "invocations": 0}
    data["seconds"] += seconds
    data["invocations"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def run_part(study: Study, name: str, cell: int | None) -> None:
    """Run a part's missing runs (or only run `cell`), then its analysis when all are done."""
    part = BUILDERS[name](study)
    print_estimate(name, part)
    if cell is not None and not 0 <= cell < len(part.jobs):
        raise SystemExit(f"--cell {cell}: {name} has runs 0..{len(part.jobs) - 1}")
    started = time.perf_counter()
    try:
        for job in part.jobs if cell is None else [part.jobs[cell]]:
            if not job.done():
                job.run()
        if all(job.done() for job in part.jobs):
            part.finish()
        elif cell is None:
            raise SystemExit(f"{name}: some runs did not finish")
    finally:
        add_wall_time(study, name, time.perf_counter() - started)
    echo(f"== {name}: done in {(time.perf_counter() - started) / 60:.1f} min")


# =========================================================================== report
def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    """(mean, sample std, count) of the values that exist, or None."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def fmt(values: list[float | None], digits: int = 3) -> str:
    """`mean ± std` over seeds (std 0 with one seed is printed as such: no error bar)."""
    stats = mean_std(values)
    if stats is None:
        return "n/a"
    mean, std, n = stats
    text = f"{mean:.{digits}f}".replace(f"-0.{'0' * digits}", f"0.{'0' * digits}")  # no "-0.000"
    return f"{text} ± {std:.{digits}f}" if n > 1 else text


@dataclass(frozen=True)
class Finding:
    """One claim of a paper tested by a difference of means over seeds."""

    claim: str  # the paper's claim, in a few words
    comparison: str  # what is compared here: "A minus B"
    diff: float
    se: float  # standard error of the difference (Welch)
    seeds: int  # seeds of the smaller side
    expected: int  # the sign of `diff` the claim predicts
    unit: str = "average score"

    @property
    def verdict(self) -> str:
        if math.isnan(self.diff):
            return "not measured"
        if self.seeds < 2:
            return "one seed: not tested"
        if abs(self.diff) <= 2 * self.se:
            return "not resolved: within seed noise (under 2 standard errors)"
        return "reproduced" if self.diff * self.expected > 0 else "opposite here"

    def line(self) -> str:
        return f"{self.comparison}: {self.diff:+.3f} ± {self.se:.3f} {self.unit} ({self.verdict})."


def compare(
    claim: str, comparison: str, a: list[float], b: list[float], expected: int, **kwargs
) -> Finding:
    """Difference of the means of `a` and `b` over seeds, with its standard error."""
    sa, sb = mean_std(a), mean_std(b)
    if sa is None or sb is None:
        return Finding(claim, comparison, math.nan, math.nan, 0, expected, **kwargs)
    se = math.sqrt(sa[1] ** 2 / sa[2] + sb[1] ** 2 / sb[2])
    return Finding(claim, comparison, sa[0] - sb[0], se, min(sa[2], sb[2]), expected, **kwargs)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def save_figure(figure, path: Path) -> None:
    """Write a matplotlib figure as PNG and release it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on the study machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts (same keys) as CSV; nothing for no rows."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


@dataclass
class Report:
    """Collects markdown sections and writes the small result files beside them."""

    study: Study
    sections: list[str] = field(default_factory=list)
    summary: list[list[str]] = field(default_factory=list)  # [claim, measured, verdict] rows

    @property
    def figures(self) -> Path:
        return self.study.docs / "figures"

    @property
    def results(self) -> Path:
        return self.study.docs / "results"

    def figure(self, name: str) -> tuple[Path, str]:
        """(file to write, relative link for results.md)."""
        prefix = "study_quick_" if self.study.quick else "study_"
        return self.figures / f"{prefix}{name}.png", f"figures/{prefix}{name}.png"

    def add(self, text: str) -> None:
        self.sections.append(text.rstrip() + "\n")

    def add_findings(self, findings: list[Finding]) -> None:
        """The findings as lines under a section's table, and rows of the summary."""
        if not findings:
            self.add("Fewer than two configurations ran: no claim can be checked.")
            return
        self.add("\n".join(f"- {finding.line()}" for finding in findings))
        self.summary += [
            [f.claim, f"{f.comparison}: {f.diff:+.3f} ± {f.se:.3f} {f.unit}", f.verdict]
            for f in findings
        ]


# --------------------------------------------------------------------------- report: 1
def granularity_records(study: Study) -> tuple[list[dict], list[str], int | None]:
    """Finished cells of this study's grid, the task names and the step count."""
    path = study.part_dir("granularity") / "results.json"
    if not path.is_file():
        return [], [], None
    records = json.loads(path.read_text())
    _, _, cells = granularity_sweep(study)
    recipe = load_recipe(MIXTURE, list(study.settings.overrides))
    tasks = [t.name for t in recipe.tasks]
    wanted = {c.name for c in cells}
    return [r for r in records if r["name"] in wanted], tasks, recipe.train.max_steps


def granularity_groups(records: list[dict]) -> dict[str, list[dict]]:
    """'smora p=8', ..., 'lora r=8' -> records of that configuration over seeds."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(cell_label(record), []).append(record)
    return groups


def granularity_table(
    records: list[dict], tasks: list[str], steps: int, step_times: dict[str, float]
) -> str:
    """Mean ± std per configuration: tasks, average, parameters, step time."""
    header = ["adapter", "E", "k/p", "seeds", *tasks, "average", "trainable", "activated"]
    header.append("s/step")
    rows = []
    for label, group in granularity_groups(records).items():
        first = group[0]
        experts = "-" if first["baseline"] else str(first["experts"])
        active = "-" if first["baseline"] else str(first["active_experts"])
        row = [label, experts, active, str(len(group))]
        row += [fmt([g["tasks"].get(t) for g in group]) for t in tasks]
        row.append("**" + fmt([g["average"] for g in group]) + "**")
        row += [f"{first['trainable_params']:,}", f"{first['activated_params']:,}"]
        seconds = step_times.get(label)
        if seconds is None:  # not timed: the fastest seed (a busy machine only adds time)
            seconds = min(g["train_seconds"] for g in group) / steps
        row.append(f"{seconds:.2f}")
        rows.append(row)
    return md_table(header, rows)


def granularity_task_plot(records: list[dict], tasks: list[str], path: Path) -> None:
    """One panel per task (and the average): score vs p per method, baselines as lines."""
    plt = pyplot()
    panels = [*tasks, "average"]
    figure, axes = plt.subplots(2, math.ceil(len(panels) / 2), figsize=(12, 6.5), squeeze=False)
    groups = granularity_groups(records)
    for axis, task in zip(axes.flat, panels, strict=False):

        def score(record: dict, task: str = task) -> float | None:
            return record["average"] if task == "average" else record["tasks"].get(task)

        granularity_panel(axis, groups, score)
        axis.set_title(task)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    figure.suptitle("Granularity: r = 64, k = 8 fixed; mean ± std over seeds")
    save_figure(figure, path)


def granularity_panel(axis, groups: dict[str, list[dict]], score: Callable) -> None:
    """Score vs p per swept method with error bars; baselines as bands."""
    methods: dict[str, list[tuple[int, tuple]]] = {}
    styles = iter(["--", ":"])
    for label, group in groups.items():
        stats = mean_std([score(g) for g in group])
        if stats is None:
            continue
        if group[0]["baseline"]:
            axis.axhline(stats[0], color="grey", linestyle=next(styles, "-."), label=label)
            axis.axhspan(stats[0] - stats[1], stats[0] + stats[1], color="grey", alpha=0.1)
        else:
            methods.setdefault(group[0]["method"], []).append((group[0]["expert_rank"], stats))
    for offset, (method, points) in enumerate(methods.items()):
        points.sort()
        # dodge the methods sideways a little so that their error bars do not hide each other
        xs = [p * 2 ** (0.06 * (offset - (len(methods) - 1) / 2)) for p, _ in points]
        axis.errorbar(
            xs,
            [s[0] for _, s in points],
            yerr=[s[1] for _, s in points],
            marker="o",
            capsize=3,
            label=method,
        )
    axis.set_xscale("log", base=2)
    ranks = sorted({p for points in methods.values() for p, _ in points}) or [1]
    axis.set_xticks(ranks, [str(p) for p in ranks])
    axis.set_xlim(max(ranks) * 1.4, min(ranks) / 1.4)  # finer granularity to the right
    axis.set_xlabel("rank per expert p")
    axis.grid(alpha=0.3)


def granularity_claims(records: list[dict]) -> list[Finding]:
    """SMoRA's two claims, from the average scores over seeds."""
    groups = granularity_groups(records)
    averages = {label: [g["average"] for g in group] for label, group in groups.items()}
    ranks = sorted({r["expert_rank"] for r in records if not r["baseline"]})
    if len(ranks) < 2:
        return []
    fine, coarse = ranks[0], ranks[-1]
    findings = []
    for method in ("smora", "moe-lora"):
        a, b = averages.get(f"{method} p={fine}"), averages.get(f"{method} p={coarse}")
        if a and b:
            findings.append(
                compare(
                    f"SMoRA: finer experts score higher ({method})",
                    f"{method}, p={fine} minus p={coarse}",
                    a,
                    b,
                    +1,
                )
            )
    for baseline, claim in (
        ("lora r=64", "SMoRA (8 of 64 ranks active) beats LoRA of the same total rank"),
        ("lora r=8", "SMoRA beats LoRA of the same activated rank"),
    ):
        a, b = averages.get(f"smora p={fine}"), averages.get(baseline)
        if a and b:
            findings.append(compare(claim, f"smora p={fine} minus {baseline}", a, b, +1))
    return findings


def report_granularity(report: Report) -> None:
    """Section 1: table, verdicts, figures, and the raw sweep results."""
    records, tasks, steps = granularity_records(report.study)
    report.add("## 1. Granularity (SMoRA's central claim)")
    if not records:
        report.add("_Not run yet_ (`python scripts/study.py granularity`).")
        return
    from smora_cli.sweep import plot

    average_png, average_link = report.figure("granularity")
    tasks_png, tasks_link = report.figure("granularity_tasks")
    plot(records, average_png)  # the figure `smora sweep-granularity` draws
    average_png.chmod(0o644)  # smora's atomic writes leave 0600; docs are for everyone
    granularity_task_plot(records, tasks, tasks_png)
    csv_text = (report.study.part_dir("granularity") / "results.csv").read_text()
    (report.results / "granularity.csv").write_text(csv_text)
    (report.results / "granularity.json").write_text(json.dumps(records, indent=2) + "\n")
    report.add(GRANULARITY_INTRO.format(steps=steps, rounds=report.study.settings.timing_rounds))
    timing = report.study.part_dir("granularity") / STEP_TIMING
    step_times = json.loads(timing.read_text()) if timing.is_file() else {}
    if step_times:
        (report.results / STEP_TIMING).write_text(timing.read_text())
    report.add(granularity_table(records, tasks, steps, step_times))
    report.add_findings(granularity_claims(records))
    report.add(f"![average score vs p]({average_link})\n\n![per-task score vs p]({tasks_link})")


GRANULARITY_INTRO = """\
`smora sweep-granularity configs/study/mixture.yaml`: every cell trains one adapter on the
five-task mixture for {steps} steps of 32 examples and is scored on the test splits (accuracy;
Pearson/Spearman mean for lee_similarity). smora and moe-lora keep r = 64 ranks with k = 8
active per token and vary the rank per expert p (E = 64/p experts, k/p of them active);
LoRA r=8 has the same activated rank, LoRA r=64 the same total rank. Trainable parameters
exclude the task heads (identical everywhere); activated = adapter weights one token touches;
s/step = seconds per optimizer step of each configuration, measured after the grid with all
ten trained in one process on the same batches, round-robin, median of {rounds} rounds (the
cells' own wall times depend on what else the machine ran; `docs/benchmarks.md` has the layer- and
model-level ratios)."""


# --------------------------------------------------------------------------- report: 2
def merging_rows(records: list[dict]) -> list[dict]:
    """One flat row per (set, merge, seed, task) for the CSV."""
    return [
        {"set": r["set"], "merge": r["merge"], "seed": r["seed"], "task": task, **values}
        for r in records
        for task, values in r["tasks"].items()
    ]


def merging_groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(set, merge) -> records of that merge over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["set"], record["merge"]), []).append(record)
    return groups


def merging_tables(records: list[dict]) -> str:
    """Own-adapter scores per set, then drops per set and merge method."""
    tasks = list(records[0]["tasks"])
    own_rows, drop_rows = {}, []
    for (set_name, method), group in merging_groups(records).items():
        own_rows.setdefault(
            set_name,
            [set_name, str(len(group))]
            + [fmt([g["tasks"][t]["own"] for g in group]) for t in tasks],
        )
        drops = [[g["tasks"][t]["drop"] for g in group] for t in tasks]
        average = [statistics.fmean(g["tasks"][t]["drop"] for t in tasks) for g in group]
        drop_rows.append([set_name, method, str(len(group))] + [fmt(d) for d in drops])
        drop_rows[-1].append("**" + fmt(average) + "**")
    own = md_table(["adapters", "seeds", *tasks], list(own_rows.values()))
    drop = md_table(["adapters", "merge", "seeds", *tasks, "mean drop"], drop_rows)
    return (
        "Each task's own adapter (with its own head), test score:\n\n"
        + own
        + "\nDrop after merging the four adapters (own − merged; positive = worse):\n\n"
        + drop
    )


def merging_plot(records: list[dict], path: Path) -> None:
    """Drop per task (and its mean over tasks) per adapter set and merge, ±1 std over seeds."""
    plt = pyplot()
    tasks = list(records[0]["tasks"])
    groups = merging_groups(records)
    figure, axis = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(groups)
    for i, ((set_name, method), group) in enumerate(groups.items()):
        stats = [mean_std([g["tasks"][t]["drop"] for g in group]) for t in tasks]
        stats.append(
            mean_std([statistics.fmean(v["drop"] for v in g["tasks"].values()) for g in group])
        )
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(tasks) + 1)]
        axis.bar(
            xs,
            [s[0] for s in stats],
            width,
            yerr=[s[1] for s in stats],
            capsize=3,
            label=f"{set_name} {method}",
        )
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(tasks) + 1), [*tasks, "mean over tasks"])
    axis.set_ylabel("score drop after merging (own − merged)")
    axis.set_title("Merging interference: four single-task adapters merged into one")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="small")
    save_figure(figure, path)


def merging_claims(records: list[dict]) -> list[Finding]:
    """FlyLoRA's merging claims, from the mean drop over the four tasks."""
    groups = merging_groups(records)

    def mean_drops(key: tuple[str, str]) -> list[float]:
        return [
            statistics.fmean(v["drop"] for v in g["tasks"].values()) for g in groups.get(key, [])
        ]

    less = "FlyLoRA adapters lose less when merged than LoRA adapters"
    pairs = [
        (("flylora", "mean"), ("lora", "mean"), less, "FlyLoRA mean minus LoRA mean"),
        (("flylora", "mean"), ("lora", "ties"), less, "FlyLoRA mean minus LoRA TIES"),
        (
            ("flylora", "mean"),
            ("flylora-same-A", "mean"),
            "FlyLoRA's low interference needs independent A's (control: one shared A)",
            "FlyLoRA distinct A seeds minus one shared A seed",
        ),
    ]
    return [
        compare(claim, label, mean_drops(a), mean_drops(b), -1, unit="mean drop")
        for a, b, claim, label in pairs
        if groups.get(a) and groups.get(b)
    ]


def report_merging(report: Report) -> None:
    """Section 2: tables, verdicts, figure and raw merge results."""
    path = report.study.part_dir("merging") / "results.json"
    report.add("## 2. Merging interference (FlyLoRA's claim)")
    if not path.is_file():
        report.add("_Not run yet_ (`python scripts/study.py merging`).")
        return
    records = json.loads(path.read_text())
    png, link = report.figure("merging")
    merging_plot(records, png)
    (report.results / "merging.json").write_text(json.dumps(records, indent=2) + "\n")
    write_csv(report.results / "merging.csv", merging_rows(records))
    recipe = load_recipe(SINGLE_TASK, list(report.study.settings.overrides))
    report.add(MERGING_INTRO.format(steps=recipe.train.max_steps, batch=recipe.train.batch_size))
    report.add(merging_tables(records))
    report.add_findings(merging_claims(records))
    report.add(f"![score drop after merging]({link})")


MERGING_INTRO = """\
One adapter per task (sentiment, subjectivity, debate_party, qa_topic; `configs/study/
single_task.yaml`, {steps} steps of {batch}), per seed: `lora` r=32 α=64 and `flylora` r=32
k=8 α=64 (scaling 2 for both), FlyLoRA with a distinct `a_seed` per task (`flylora`) and, as
the control, one shared `a_seed` for all four (`flylora-same-A`; its task-0 adapter is the
distinct set's). Merges (`smora merge`, `smora_cli.merging.run_merge`): `mean` = weighted
factor mean (A, B, biases; FlyLoRA's merge), `linear` = mean of ΔW (exact), `ties` = TIES on
ΔW (density 0.5, λ = 1). FlyLoRA is token-routed, so it cannot be merged in ΔW space (its gate
changes per token): only `mean` applies. Merged classifier adapters have no heads: task t is
read by the head trained with its own adapter. Scores on the test split (sentiment: a fixed
500-example subset)."""


# --------------------------------------------------------------------------- report: 3
def short_layer(path: str) -> str:
    """encoder.layer.3.attention.self.query -> 3.q (MiniLM's six linear modules per block)."""
    names = {
        "query": "q",
        "key": "k",
        "value": "v",
        "attention.output.dense": "o",
        "intermediate.dense": "up",
        "output.dense": "down",
    }
    head, _, rest = path.partition("layer.")
    index, _, module = rest.partition(".")
    for long, short in names.items():
        if module.endswith(long):
            return f"{index}.{short}"
    return path.rsplit(".", 2)[-2] if head else path


def rank_heatmap(maps: dict[str, dict], path: Path) -> None:
    """Tasks x layers of the learned rank e*, one panel per seed."""
    plt = pyplot()
    size = (12, 1.4 + 1.9 * len(maps))
    figure, axes = plt.subplots(len(maps), 1, figsize=size, sharex=True, layout="constrained")
    axes = [axes] if len(maps) == 1 else list(axes)
    image = None
    for axis, (seed, by_task) in zip(axes, maps.items(), strict=True):
        tasks = list(by_task)
        layers = list(next(iter(by_task.values())))
        values = [[by_task[t][layer] for layer in layers] for t in tasks]
        image = axis.imshow(values, aspect="auto", cmap="viridis", vmin=0.5, vmax=8.5)
        axis.set_yticks(range(len(tasks)), tasks)
        axis.set_title(f"seed {seed}", fontsize="small")
    # sharex: only the bottom panel shows the module names, so panels do not overlap
    axes[-1].set_xticks(range(len(layers)), [short_layer(layer) for layer in layers], rotation=90)
    axes[-1].set_xlabel("block.module (o = attention output; up, down = feed-forward)")
    figure.colorbar(image, ax=axes, label="learned rank e*", ticks=range(1, 9), shrink=0.9)
    figure.suptitle("MoRE: learned rank per task and adapted layer")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def more_scores(study: Study) -> dict[str, list[dict]]:
    """method -> the results of each finished seed."""
    scores: dict[str, list[dict]] = {}
    for (name, _), recipe in more_recipes(study).items():
        if is_finished(recipe.output_dir):
            scores.setdefault(name, []).append(read_eval(recipe.output_dir))
    return scores


def more_table(scores: dict[str, list[dict]]) -> str:
    """Test scores of MoRE and its baselines, mean ± std over seeds."""
    tasks = list(next(iter(scores.values()))[0]["scores"])
    rows = []
    for name, runs in scores.items():
        adapter = MORE_ADAPTERS[name]
        shape = f"r={adapter['r']}" + (
            f", k={adapter['k']}, p={adapter['expert_rank']}" if adapter["k"] else ""
        )
        row = [f"{name} ({shape})", str(len(runs))]
        row += [fmt([r["scores"][t] for r in runs]) for t in tasks]
        rows.append(row + ["**" + fmt([r["average"] for r in runs]) + "**"])
    return md_table(["adapter", "seeds", *tasks, "average"], rows)


def rank_summary(maps: dict[str, dict]) -> str:
    """Mean learned rank per task (over layers), per seed."""
    tasks = list(next(iter(maps.values())))
    header = ["task", *[f"seed {s}" for s in maps], "layers at rank 1 / 8 (all seeds)"]
    rows = []
    for task in tasks:
        ranks = [list(maps[s][task].values()) for s in maps]
        flat = [r for seed_ranks in ranks for r in seed_ranks]
        rows.append(
            [
                task,
                *[f"{statistics.fmean(r):.2f}" for r in ranks],
                f"{flat.count(1)} / {flat.count(8)} of {len(flat)}",
            ]
        )
    return md_table(header, rows)


def shared_rank_layers(maps: dict[str, dict]) -> str:
    """Per seed: in how many layers every task got the same rank (a map not yet by task)."""
    counts = []
    for seed, per_task in maps.items():
        layers = next(iter(per_task.values())).keys()
        same = sum(len({per_task[t][layer] for t in per_task}) == 1 for layer in layers)
        counts.append(f"{same} of {len(layers)} (seed {seed})")
    return (
        "Layers where all tasks got the same rank: "
        + ", ".join(counts)
        + ". Where that number is high, the rank is set by the layer's selector, not by "
        "the task: the map has not become task-specific yet."
    )


def layer_count(maps: dict[str, dict]) -> int:
    """Number of adapted layers in a rank map."""
    return len(next(iter(next(iter(maps.values())).values())))


def speed_table(speed: dict) -> str:
    """Median forward time per case and its ratio to the base encoder."""
    rows = [
        [name, f"{c['median_ms']:.1f}", f"{c['ratio']:.2f}"] for name, c in speed["cases"].items()
    ]
    return md_table(["forward pass (" + speed["batch"] + ")", "median ms", "× base"], rows)


def folded_table(folded: dict) -> str:
    """Per task: routed adapter score, folded model score, difference."""
    rows = [
        [task, f"{v['routed']:.4f}", f"{v['folded']:.4f}", f"{v['folded'] - v['routed']:+.1e}"]
        for task, v in folded.items()
    ]
    return md_table(["task", "routed adapter", "folded model", "difference"], rows)


def report_more(report: Report) -> None:
    """Section 3: scores, rank maps, folding check and forward speed."""
    part = report.study.part_dir("more")
    report.add("## 3. MoRE: learned rank per task, score and folded speed")
    scores = more_scores(report.study)
    if not scores:
        report.add("_Not run yet_ (`python scripts/study.py more`).")
        return
    report.add(MORE_INTRO)
    report.add(more_table(scores))
    report.add_findings(more_claims(scores))
    extras = {name: part / f"{name}.json" for name in ("rank_maps", "folded_scores", "speed")}
    loaded = {k: json.loads(p.read_text()) for k, p in extras.items() if p.is_file()}
    (report.results / "more.json").write_text(
        json.dumps({"scores": scores, **loaded}, indent=2) + "\n"
    )
    if "rank_maps" in loaded:
        png, link = report.figure("more_ranks")
        rank_heatmap(loaded["rank_maps"], png)
        report.add(
            f"Mean learned rank over the {layer_count(loaded['rank_maps'])} adapted layers:\n\n"
            + rank_summary(loaded["rank_maps"])
            + "\n\n"
            + shared_rank_layers(loaded["rank_maps"])
        )
        report.add(f"![MoRE rank map]({link})")
    if "folded_scores" in loaded:
        report.add(
            "Folding (`smora merge --per-task`): each task's plain model against the routed "
            "adapter, first seed:\n\n" + folded_table(loaded["folded_scores"])
        )
    if "speed" in loaded:
        report.add(SPEED_INTRO.format(**loaded["speed"]) + "\n\n" + speed_table(loaded["speed"]))
    if "folded_scores" in loaded and "speed" in loaded:
        report.summary.append(fold_summary(loaded["folded_scores"], loaded["speed"]))


def fold_summary(folded: dict, speed: dict) -> list[str]:
    """The zero-overhead claim: folded scores equal routed ones, forward time equals base."""
    largest = max(abs(v["folded"] - v["routed"]) for v in folded.values())
    ratio = next(c["ratio"] for name, c in speed["cases"].items() if "folded" in name)
    exact, free = largest < 1e-6, abs(ratio - 1) < 0.05
    return [
        "MoRE folds into the weights with zero inference overhead",
        f"folded per-task scores differ by at most {largest:.0e}; forward time {ratio:.2f} × base",
        "reproduced" if exact and free else "not reproduced",
    ]


def more_claims(scores: dict[str, list[dict]]) -> list[Finding]:
    """MoRE's score claim against its two baselines."""
    averages = {name: [r["average"] for r in runs] for name, runs in scores.items()}
    return [
        compare(
            f"MoRE beats {other}",
            f"more minus {other}",
            averages["more"],
            averages[other],
            +1,
        )
        for other in ("lora", "moe-lora")
        if "more" in averages and other in averages
    ]


MORE_INTRO = """\
All three adapters train on the five-task mixture with MoRE's task-homogeneous batches
(`mixing.strategy: more`, p_t ∝ exp(n_t/Σn)), the same steps, lr and α = 32 (MoRE's GLUE
value over R = 8, `configs/glue.yaml`): `more` R=8 (linear rank scaling, contrastive 0.1);
`lora` r=8; `moe-lora` r=16 as 4 experts of rank 4 with 2 active (MoLoRA's top-2 shape; its
activated rank 8 equals LoRA's r and MoRE's largest R). Test scores, mean ± std over seeds:"""

SPEED_INTRO = """\
Forward speed, same process, interleaved rounds with a rotating start, median of {repeats}
rounds of 3 forwards, {threads} threads: the folded per-task model is the base architecture
with changed weights, so its ratio to the base encoder should be 1 (up to noise); the routed
adapter and an unfolded LoRA show what folding saves."""


# --------------------------------------------------------------------------- report: 4
ROUTER_STATS = ("mean_entropy", "min_entropy", "max_load")


def router_runs(study: Study) -> dict[str, dict[int, dict]]:
    """rate -> seed -> {"points": [{step, mean_entropy, min_entropy, max_load}], "average"}."""
    runs: dict[str, dict[int, dict]] = {}
    for (rate, seed), recipe in router_recipes(study).items():
        path = recipe.output_dir / "metrics.jsonl"
        if not is_finished(recipe.output_dir) or not path.is_file():
            continue
        points = []
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("router"):
                stats = {k: entry["router"][k] for k in ROUTER_STATS}
                points.append({"step": entry["step"], **stats})
        average = read_eval(recipe.output_dir)["average"]
        runs.setdefault(f"{rate:g}", {})[seed] = {"points": points, "average": average}
    return runs


def router_curves(runs: dict[str, dict[int, dict]]) -> dict[str, list[dict]]:
    """rate -> the seeds' mean (and std) of each statistic at every step all seeds logged."""
    curves = {}
    for rate, seeds in runs.items():
        per_seed = [{p["step"]: p for p in run["points"]} for run in seeds.values()]
        steps = sorted(set.intersection(*(set(points) for points in per_seed)))
        curves[rate] = []
        for step in steps:
            point = {"step": step}
            for key in ROUTER_STATS:
                mean, std, _ = mean_std([points[step][key] for points in per_seed])
                point.update({key: mean, f"{key}_std": std})
            curves[rate].append(point)
    return curves


def router_plot(curves: dict[str, list[dict]], experts: int, path: Path) -> None:
    """Entropy and busiest-expert share vs step, one colour per balance rate."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for rate, points in curves.items():
        steps = [p["step"] for p in points]
        mean = [p["mean_entropy"] for p in points]
        (line,) = left.plot(steps, mean, label=f"balance_rate {rate}")
        spread = [p["mean_entropy_std"] for p in points]
        left.fill_between(
            steps,
            [m - s for m, s in zip(mean, spread, strict=True)],
            [m + s for m, s in zip(mean, spread, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
        left.plot(steps, [p["min_entropy"] for p in points], linestyle=":", color=line.get_color())
        right.plot(
            steps,
            [p["max_load"] for p in points],
            color=line.get_color(),
            label=f"balance_rate {rate}",
        )
    right.axhline(1 / experts, color="grey", linestyle="--", label=f"balanced (1/{experts})")
    left.set_ylabel("normalised load entropy (1 = balanced)")
    left.set_title("Load entropy: layer mean (solid, ± std over seeds), worst layer (dotted)")
    right.set_ylabel("largest expert share of selections (any layer)")
    right.set_yscale("log")
    right.set_title("Busiest expert (mean over seeds)")
    for axis in (left, right):
        axis.set_xlabel("training step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    save_figure(figure, path)


def final_values(seeds: dict[int, dict], key: str) -> list[float]:
    """One statistic at the last logged step of each seed's run."""
    return [run["points"][-1][key] for run in seeds.values() if run["points"]]


def router_table(runs: dict[str, dict[int, dict]]) -> str:
    """Router statistics at the last logging step and the score: mean ± std over seeds."""
    rows = [
        [
            rate + (" (smora default)" if rate == "1e-05" else ""),
            str(len(seeds)),
            *[fmt(final_values(seeds, key)) for key in ROUTER_STATS],
            fmt([run["average"] for run in seeds.values()]),
        ]
        for rate, seeds in runs.items()
    ]
    header = ["balance_rate", "seeds", "mean entropy (last)", "worst layer", "max load"]
    return md_table([*header, "average score"], rows)


def router_claims(runs: dict[str, dict[int, dict]]) -> list[Finding]:
    """SMoRA's loss-free balancing: worst-layer load entropy at the end, with against without."""
    off = runs.get("0")
    if not off:
        return []
    claim = "The balance bias keeps expert load balanced without an auxiliary loss"
    return [
        compare(
            f"{claim} (u={rate})",
            f"u={rate} minus u=0",
            final_values(seeds, "min_entropy"),
            final_values(off, "min_entropy"),
            +1,
            unit="worst-layer load entropy",
        )
        for rate, seeds in runs.items()
        if rate != "0"
    ]


def report_router(report: Report) -> None:
    """Section 4: router curves, their table, findings and figure."""
    report.add("## 4. Router health: expert load with and without the balance bias")
    runs = router_runs(report.study)
    if not runs:
        report.add("_Not run yet_ (`python scripts/study.py router`).")
        return
    curves = router_curves(runs)
    png, link = report.figure("router")
    router_plot(curves, 64, png)
    (report.results / "router.json").write_text(
        json.dumps({"curves": curves, "runs": runs}, indent=2) + "\n"
    )
    steps = max(p["step"] for points in curves.values() for p in points)
    seeds = ", ".join(map(str, report.study.settings.seeds))
    report.add(ROUTER_INTRO.format(seeds=seeds, steps=steps))
    report.add(router_table(runs))
    report.add_findings(router_claims(runs))
    report.add(f"![router load over training]({link})")


ROUTER_INTRO = """\
smora r=64, k=8, p=1 on the mixture, seeds {seeds}, {steps} steps, at each `balance_rate` u
(the bias step per optimizer step; 0 disables it). `metrics.jsonl` logs, per layer, the load
of each expert over the logging interval: normalised entropy (1 = uniform over the 64
experts) and the share of the busiest expert (1/64 = 0.016 when balanced). The bias moves at
most u per step, so after {steps} steps it is at most {steps} u: with the default u = 1e-5
that is small against the spread of the sigmoid router scores, so at this length the
default and u = 0 may look alike; a collapse, if any, shows as falling entropy and a
rising busiest-expert share."""


# --------------------------------------------------------------------------- report: intro, end
def wall_times(study: Study) -> str:
    """Wall time spent on each part, summed over invocations."""
    rows = []
    for part in PARTS:
        path = study.part_dir(part) / "wall_time.json"
        if path.is_file():
            data = json.loads(path.read_text())
            rows.append([part, f"{data['seconds'] / 60:.1f} min", str(data["invocations"])])
    if not rows:
        return "No part has run yet."
    return md_table(["part", "wall time", "invocations"], rows)


def report_intro(report: Report) -> None:
    """Title, setup, commands and wall times."""
    study = report.study
    recipe = load_recipe(MIXTURE, list(study.settings.overrides))
    quick = (
        " (**`--quick` smoke test: a few steps, one seed — not evidence**)" if study.quick else ""
    )
    report.add(f"# Results: the evidence study{quick}")
    report.add(
        INTRO.format(
            steps=recipe.train.max_steps,
            batch=recipe.train.batch_size,
            lr=recipe.train.lr,
            seeds=", ".join(map(str, study.settings.seeds)),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
        )
    )
    report.add(
        "Wall time of each part on this machine (shared with other jobs at times):\n\n"
        + wall_times(study)
    )


INTRO = """\
What this answers: four claims of the papers behind smora, checked on a real pretrained
encoder (all-MiniLM-L6-v2, 22M parameters) and five real offline tasks (README "Data":
review sentiment, subjectivity, debate party, Lee document similarity as regression, QA
topic with 16 classes), on 2 CPU cores. Everything is produced by one script:

```bash
python scripts/study.py all            # granularity, merging, more, router, then this report
python scripts/study.py report         # only rewrite this file from runs/study/
```

Setup shared by the mixture runs (`configs/study/mixture.yaml`): {steps} steps of {batch}
examples, AdamW lr {lr} cosine with 10 % warm-up, temperature-2 mixing, max length 64, all
linear layers adapted, one linear head per task; seeds {seeds}; scores on the **test**
splits (nothing here was tuned on them); mean ± std over seeds (sample std; no ± means one
seed). torch {torch}, {threads} threads. Raw numbers: `docs/results/*.json|csv`."""


def flan_tasks() -> list[dict]:
    """The first four tasks of configs/flan_mix.yaml (the merging experiment's four)."""
    return yaml.safe_load((ROOT / "configs" / "flan_mix.yaml").read_text())["tasks"][:4]


def flan_task_commands() -> list[str]:
    """One LoRA and one FlyLoRA adapter per flan_mix task (tasks as one-line JSON = YAML)."""
    lines = []
    for index, task in enumerate(flan_tasks()):
        tasks = shlex.quote("tasks=" + json.dumps([task]))
        for method, extra in (
            ("lora", "adapter.k=null"),  # flan_mix's k: 8 is for smora
            ("flylora", f"adapter.k=8 adapter.a_seed={index + 1} adapter.balance_rate=1e-3"),
        ):
            lines.append(
                f"sbatch scripts/slurm_multinode.sh configs/flan_mix.yaml adapter.method={method} "
                f"adapter.r=32 adapter.alpha=64 {extra} train.max_steps=2000 {tasks} "
                f"train.output_dir=runs/flan-merge/{method}-{task['name']}"
            )
    return lines


def flan_merge_commands() -> list[str]:
    """Merge configs for the four flan adapters, and how to score the merged adapters."""
    names = [task["name"] for task in flan_tasks()]
    lines = []
    for method, merge, output in (("lora", "ties", "model"), ("flylora", "mean", "adapter")):
        models = ", ".join(f"{{adapter: runs/flan-merge/{method}-{n}/adapter}}" for n in names)
        config = f"runs/flan-merge/{method}-{merge}.yaml"
        lines += [
            f"printf '%s\\n' 'models: [{models}]' 'merge_method: {merge}' "
            f"'parameters: {{lambda: 1.0, density: 0.5}}' 'output: {output}' > {config}",
            f"smora merge {config} runs/flan-merge/{method}-{merge}",
        ]
    for n in names:  # each task's own run supplies its prompts and metric
        lines += [
            f"smora eval runs/flan-merge/flylora-{n} --adapter runs/flan-merge/flylora-mean",
            f"smora eval runs/flan-merge/lora-{n} --model runs/flan-merge/lora-ties --no-adapter",
        ]
    return lines


def report_outlook(report: Report) -> None:
    """What reproduces at this scale, and the commands of a proper run."""
    steps = load_recipe(MIXTURE, list(report.study.settings.overrides)).train.max_steps
    report.add("## What reproduces, what does not at this scale, and what a proper run needs")
    report.add(OUTLOOK.format(steps=steps))
    commands = [
        PROPER_RUN,
        "# 2. merging: one adapter per task (four flan_mix tasks; FlyLoRA with its own a_seed)",
        *flan_task_commands(),
        "# merge them (linear/mean of LoRA: merge_method linear or mean, output: adapter)",
        *flan_merge_commands(),
    ]
    report.add("```bash\n" + "\n".join(commands) + "\n```")


OUTLOOK = """\
The verdicts are computed from the numbers above (difference of means ± its standard
error; "reproduced" or "opposite here" only beyond two standard errors). At this scale read
them as follows.

- **Scale.** A 22M-parameter encoder, a few thousand training examples per run and 2 CPU
  cores: every run is short (the budget of the whole study is a few hours), scores are
  far from converged, and three seeds give error bars of the same size as most effects.
  A claim that "does not reproduce" here is *not tested*, not refuted.
- **Granularity.** SMoRA's gains are reported for a decoder (Llama-family) fine-tuned on a
  FLAN-style mixture of many tasks for thousands of steps. Five small sentence tasks on a
  22M encoder after {steps} steps may not be capacity-bound at activated rank 8, in which
  case the rank per expert cannot matter much; a proper test needs `configs/flan_mix.yaml`
  (a 1B+ decoder, capped mixing, 20k steps) on GPUs and three seeds per cell.
- **Merging.** FlyLoRA's numbers come from Llama-3.1-8B adapters on unrelated skills (MMLU,
  ScienceQA, GSM8K, HumanEval), where LoRA's merged deltas collide; here the tasks are
  similar sentence classifications and each is read out by its own trained head, so both
  the interference and its remedy can be smaller than in the paper. Read the shared-A
  control with the algebra of a factor mean: averaging n adapters' factors gives
  mean(B)·mean(A) = (1/n²) Σ_i Σ_j B_i A_j, so with distinct A's each task keeps 1/n² of
  its own update, the cross terms B_i A_j are the rest (near-orthogonal noise for FlyLoRA's
  random sparse A's, another task's signal for LoRA's trained A's), and the averaged A, with
  n times the non-zeros, routes tokens differently. With one shared A, mean(B)·A =
  (1/n) Σ_i B_i A is the linear (ΔW) merge, and only the averaged balance biases move the
  routing. FlyLoRA's claim is about the first case against LoRA's factor mean; the
  shared-A control is a different, gentler merge, so it losing less does not contradict
  that claim.
- **MoRE.** MoRE's GLUE result is T5-base trained for 60k steps. Its task embeddings start
  at N(0, 0.01²), so at first every task gets the same rank in a layer (the selector's bias
  decides); the map only becomes task-specific as training separates them, which {steps}
  steps may not do (section 3 counts the layers where every task still shares one rank).
  A learned rank below R also means fewer trained ranks per task than LoRA r=8 at equal
  steps. The folded model's exactness and zero overhead do not depend on scale and are
  checked here.
- **Router health.** The default balance rate (1e-5 per step) is sized for runs of tens of
  thousands of steps; {steps} steps only show whether a router collapses early and what a
  larger rate does.

The run that would test these claims properly (GPU cluster, Hub access for the FLAN-style
tasks; `--list-cells` prints 30 cells for the grid):"""

PROPER_RUN = """\
# 1. granularity on a decoder: 30 cells (smora and moe-lora at p = 8,4,2,1, LoRA r=8 and r=64, 3 seeds)
smora sweep-granularity configs/flan_mix.yaml --methods smora,moe-lora --expert-ranks 8,4,2,1 \\
    --baselines lora:8,lora:64 --seeds 1,2,3 --out runs/flan-granularity --list-cells
sbatch --array=0-29 scripts/slurm_sweep_array.sh configs/flan_mix.yaml --methods smora,moe-lora \\
    --seeds 1,2,3 --out runs/flan-granularity train.grad_accum=32 train.max_steps=5000
# (one GPU per cell: grad_accum 32 keeps flan_mix's 256 examples per step; every array task
#  rewrites runs/flan-granularity/results.md and granularity.png)
# 4. router health of the main run: metrics.jsonl of each, with and without the bias
sbatch scripts/slurm_multinode.sh configs/flan_mix.yaml train.output_dir=runs/flan-smora
sbatch scripts/slurm_multinode.sh configs/flan_mix.yaml adapter.balance_rate=0 train.output_dir=runs/flan-smora-nobias
# 3. MoRE in its own setting (T5-base, GLUE; configs/glue.yaml) and its baselines
sbatch scripts/slurm_multinode.sh configs/glue.yaml
sbatch scripts/slurm_multinode.sh configs/glue.yaml adapter.method=lora train.output_dir=runs/glue-lora
sbatch scripts/slurm_multinode.sh configs/glue.yaml adapter.method=moe-lora adapter.r=16 adapter.k=8 \\
    adapter.expert_rank=4 train.output_dir=runs/glue-moe
smora eval runs/glue --tasks glue
smora merge --adapter runs/glue/adapter --per-task runs/glue-tasks"""


def summary_section(rows: list[list[str]]) -> str:
    """The papers' claims against this run, one row each, before the detailed sections."""
    if not rows:
        return "## At a glance\n\n_No part has run yet._\n"
    return (
        "## At a glance: the papers' claims against this run\n\n"
        + SUMMARY_INTRO
        + "\n\n"
        + md_table(["claim", "measured here (mean ± standard error over seeds)", "verdict"], rows)
    )


SUMMARY_INTRO = """\
"Reproduced" / "opposite here": the difference is beyond two standard errors in the direction
the claim predicts / in the other direction; "not resolved": within seed noise, so this run
neither supports nor refutes the claim. Drops are own-adapter score minus merged score (lower
is better). The sections below hold the tables, figures and caveats; the last section says
what a run that could settle each claim needs."""


def write_report(study: Study) -> Path:
    """docs/results.md, docs/figures/study_*.png and docs/results/*.json|csv."""
    report = Report(study)
    report.figures.mkdir(parents=True, exist_ok=True)
    report.results.mkdir(parents=True, exist_ok=True)
    for section in (
        report_intro,
        report_granularity,
        report_merging,
        report_more,
        report_router,
        report_outlook,
    ):
        section(report)
        if section is report_intro:
            intro_end = len(report.sections)
    report.sections.insert(intro_end, summary_section(report.summary))
    settings = {
        "settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(study.settings).items()
        },
        "quick": study.quick,
    }
    (report.results / "study.json").write_text(json.dumps(settings, indent=2) + "\n")
    path = study.docs / "results.md"
    path.write_text("\n".join(report.sections))
    echo(f"report written to {path} (figures in {report.figures}, data in {report.results})")
    return path


# =========================================================================== command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=[*PARTS, "report", "all"])
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps, one seed")
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="run directories")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where the report goes")
    parser.add_argument("--cell", type=int, help="run only this run of the part (see --list-cells)")
    parser.add_argument("--list-cells", action="store_true", help="print the part's runs and exit")
    args = parser.parse_args(argv)
    if (args.cell is not None or args.list_cells) and args.part not in PARTS:
        parser.error("--cell and --list-cells apply to one part: " + ", ".join(PARTS))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the requested part(s) of the study; returns the exit code."""
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    study = Study(args.out, args.docs, settings, args.quick)
    from smora_cli.utils.log import quiet_libraries

    quiet_libraries()
    parts = list(PARTS) if args.part == "all" else [args.part] if args.part != "report" else []
    try:
        if args.list_cells:
            part = BUILDERS[args.part](study)
            print_estimate(args.part, part)
            print_plan(args.part, part)
            return 0
        if args.part == "all":
            total = sum(print_estimate(name, BUILDERS[name](study)) for name in parts)
            echo(f"== all: about {total / 3600:.1f} h on an idle 2-core machine")
        for name in parts:
            run_part(study, name, args.cell)
        if args.part in ("report", "all"):
            write_report(study)
    except SmoraError as e:
        echo(f"error: {e}")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
