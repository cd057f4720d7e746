"""Each part of the study as a list of runs, each run one `smora` command.

A run is data: the command (`train`, `sweep-granularity`, `merge`, `eval`), its recipe and
overrides or flags, the directory it writes and the file whose presence means it finished.
`Run.shell()` is the command line a person would type; `execute.run_one` runs the same thing
through the library.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smora_cli.errors import UserInputError
from smora_cli.evaluation.results import results_path

SEEDS = (1, 2, 3)
QUICK_OVERRIDES = (
    "train.max_steps=2",
    "train.save_steps=2",
    "train.log_steps=1",
    "eval.limit=4",
    "eval.baseline=false",
)

GLUE_TASKS = ("cola", "mrpc", "rte", "stsb")
GLUE_RANKS = (1, 2, 4, 8, 16)
# The four adapters of MoRE's multi-task comparison (configs/study/glue_mixture.yaml).
GLUE_ADAPTERS = {
    "more": ("adapter.method=more",),
    "lora": ("adapter.method=lora",),
    "moe-lora": (
        "adapter.method=moe-lora",
        "adapter.r=16",
        "adapter.expert_rank=4",
        "adapter.k=8",
    ),
    "smora": ("adapter.method=smora", "adapter.r=64", "adapter.k=8"),
}
# Single-task adapters to merge (configs/study/decoder_merging.yaml): three tasks of the
# decoder quickstart and GLUE RTE as text-to-text.
MERGE_TASKS = {
    "sentiment": '{name: sentiment, source: "builtin:sentiment", max_eval_examples: 200}',
    "qa_topic": '{name: qa_topic, source: "builtin:qa_topic"}',
    "word_analogy": '{name: word_analogy, source: "builtin:word_analogy"}',
    "rte": (
        '{name: rte, source: "glue:rte", max_eval_examples: 300, prompt: "{sentence1}\\n'
        'Does it follow that: {sentence2}? Answer entailment or not_entailment."}'
    ),
}
# flylora-shared-a: every task a_seed 0. FlyLoRA's top-k gate depends on the token, so its
# adapters do not fold into weights: `smora merge` refuses linear and TIES for them.
MERGE_SETS = {
    "lora": ("mean", "linear", "ties"),
    "flylora": ("mean",),
    "flylora-shared-a": ("mean",),
}
ROUTER_VARIANTS = {
    "balance-1e-5": ("adapter.balance_rate=1e-5",),  # the paper's rate
    "balance-1e-3": ("adapter.balance_rate=1e-3",),
    "centered": ("adapter.center_router_input=true",),
}


@dataclass(frozen=True)
class Run:
    """One `smora` command of a part: `smora COMMAND *positional *options`.

    `options` are (flag, value) pairs, value None for a switch. `group` is the row the run's
    scores land in (its seeds averaged); `result` the file whose presence means the run
    finished; `config` the merge config a `merge` run writes to its first positional first.
    """

    part: str
    name: str
    command: str
    positional: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...]
    out: Path
    result: Path
    group: str
    seed: int
    config: dict | None = field(default=None, compare=False)

    @property
    def args(self) -> tuple[str, ...]:
        flags = [part for flag, value in self.options for part in (flag, value) if part is not None]
        return (*self.positional, *flags)

    def option(self, flag: str) -> str | None:
        return dict(self.options).get(flag)

    def shell(self) -> str:
        return shlex.join(["smora", self.command, *self.args])


@dataclass(frozen=True)
class Study:
    """Where the recipes are, where runs go, the seeds, and overrides added to every run."""

    recipes: Path = Path("configs")
    out: Path = Path("runs/study")
    seeds: tuple[int, ...] = SEEDS
    overrides: tuple[str, ...] = ()
    quick: bool = False

    def recipe(self, name: str) -> str:
        return str(self.recipes / name)

    def extra(self) -> tuple[str, ...]:
        return (*(QUICK_OVERRIDES if self.quick else ()), *self.overrides)


def train_run(
    study: Study,
    part: str,
    name: str,
    recipe: str,
    overrides: tuple[str, ...],
    group: str,
    seed: int,
) -> Run:
    out = part_dir(study, part) / name
    args = (recipe, *overrides, *study.extra(), f"train.seed={seed}", f"train.output_dir={out}")
    return Run(part, name, "train", args, (), out, results_path(out, "validation"), group, seed)


def glue_mixture(study: Study) -> list[Run]:
    adapters = dict(list(GLUE_ADAPTERS.items())[:2]) if study.quick else GLUE_ADAPTERS
    recipe = study.recipe("study/glue_mixture.yaml")
    return [
        train_run(study, "glue-mixture", f"{name}-seed{seed}", recipe, overrides, name, seed)
        for name, overrides in adapters.items()
        for seed in study.seeds
    ]


def glue_single(study: Study) -> list[Run]:
    tasks, ranks = (GLUE_TASKS[:1], GLUE_RANKS[:2]) if study.quick else (GLUE_TASKS, GLUE_RANKS)
    recipe = study.recipe("study/glue_single.yaml")
    return [
        train_run(
            study,
            "glue-single",
            f"{task}-r{r}-seed{seed}",
            recipe,
            (
                f'tasks=[{{name: {task}, source: "glue:{task}"}}]',
                f"adapter.r={r}",
                f"adapter.alpha={2 * r}",
            ),
            f"{task}-r{r}",
            seed,
        )
        for task in tasks
        for r in ranks
        for seed in study.seeds
    ]


def sweep_runs(study: Study, part: str, recipe: str, grid: dict[str, str]) -> list[Run]:
    """One run per cell of `smora sweep-granularity RECIPE` over `grid` (its flags
    --expert-ranks, --methods, --baselines): `--seeds N --cell I`, so that cells split over
    sessions; the sweep resumes a cell itself."""
    from smora_cli.recipe import load_recipe
    from smora_cli.sweep import CELL_FILE, cell_dir, plan_cells, sweep_section

    out = part_dir(study, part)
    base = load_recipe(recipe, list(study.extra()))
    runs = []
    for seed in study.seeds:
        section = sweep_section(
            base.sweep,
            {
                "expert_ranks": [int(p) for p in grid["--expert-ranks"].split(",")],
                "methods": grid["--methods"].split(","),
                "baselines": grid["--baselines"].split(","),
                "seeds": [seed],
                "output_dir": str(out),
            },
        )
        for cell in plan_cells(section, echo=lambda *_: None):
            options = (
                *grid.items(),
                ("--seeds", str(seed)),
                ("--out", str(out)),
                ("--cell", str(cell.index)),
            )
            group = cell.name.rsplit("-seed", 1)[0]
            done = cell_dir(out, cell) / CELL_FILE
            positional = (recipe, *study.extra())
            run = Run(
                part, cell.name, "sweep-granularity", positional, options, out, done, group, seed
            )
            runs.append(run)
    return runs


def decoder_granularity(study: Study) -> list[Run]:
    """SMoRA's granularity claim on SmolLM2: p = 8 and 1, LoRA r = 8 and 64."""
    grid = {"--expert-ranks": "8,1", "--methods": "smora,moe-lora", "--baselines": "lora:8,lora:64"}
    if study.quick:
        grid = {"--expert-ranks": "8", "--methods": "smora", "--baselines": "lora:8"}
    recipe = study.recipe("study/decoder_granularity.yaml")
    return sweep_runs(study, "decoder-granularity", recipe, grid)


def minilm_granularity(study: Study) -> list[Run]:
    """The earlier MiniLM grid (configs/study/mixture.yaml, five offline tasks, test split)."""
    grid = {
        "--expert-ranks": "8,4,2,1",
        "--methods": "smora,moe-lora",
        "--baselines": "lora:8,lora:64",
    }
    if study.quick:
        grid = {"--expert-ranks": "8", "--methods": "smora", "--baselines": "lora:8"}
    return sweep_runs(study, "minilm-granularity", study.recipe("study/mixture.yaml"), grid)


def merge_a_seed(adapter_set: str, task_index: int) -> int:
    """FlyLoRA's distinct frozen A per task (the task's index), or one shared A (seed 0)."""
    return task_index if adapter_set == "flylora" else 0


def decoder_merging(study: Study) -> list[Run]:
    """Single-task adapters, their merges, and each merge scored on each task's run."""
    from smora_cli.merging.run import MERGE_RECIPE
    from smora_cli.train import ADAPTER_DIR

    part = "decoder-merging"
    tasks = dict(list(MERGE_TASKS.items())[:2]) if study.quick else MERGE_TASKS
    recipe = study.recipe("study/decoder_merging.yaml")
    trained: dict[tuple[str, int], list[tuple[str, Run]]] = {}
    runs = []
    for adapter_set in MERGE_SETS:
        method = "lora" if adapter_set == "lora" else "flylora"
        for seed in study.seeds:
            for index, (task, spec) in enumerate(tasks.items()):
                overrides = (f"tasks=[{spec}]", f"adapter.method={method}")
                if method == "flylora":
                    overrides += (
                        "adapter.k=8",
                        f"adapter.a_seed={merge_a_seed(adapter_set, index)}",
                    )
                run = train_run(
                    study,
                    part,
                    f"{adapter_set}-{task}-seed{seed}",
                    recipe,
                    overrides,
                    f"{adapter_set}:single",
                    seed,
                )
                trained.setdefault((adapter_set, seed), []).append((task, run))
                runs.append(run)
    for (adapter_set, seed), singles in trained.items():
        for merge_method in MERGE_SETS[adapter_set][: 1 if study.quick else None]:
            name = f"{adapter_set}-{merge_method}-seed{seed}"
            out = study.out / part / "merged" / name
            config = {
                "models": [{"adapter": str(run.out / ADAPTER_DIR)} for _, run in singles],
                "merge_method": merge_method,
                "output": "model" if merge_method == "ties" else "adapter",
            }
            if merge_method == "ties":  # configs/merge.yaml's: keep the top half, sum-elected sign
                config["parameters"] = {"lambda": 1.0, "density": 0.5, "majority_sign": "total"}
            config_path = study.out / part / "merge-configs" / f"{name}.yaml"
            group = f"{adapter_set}:{merge_method}"
            positional = (str(config_path), str(out))
            done = out / MERGE_RECIPE
            runs.append(Run(part, name, "merge", positional, (), out, done, group, seed, config))
            for task, single in singles:
                scored = out / f"eval_{task}.json"
                if merge_method == "ties":  # TIES sparsifies full matrices: a whole model
                    options: tuple = (("--model", str(out)), ("--no-adapter", None))
                else:  # mean and linear stay exact adapters on the base model
                    options = (("--adapter", str(out)),)
                options += (("--output-path", str(scored)),)
                if study.quick:
                    options += (("--limit", "4"),)
                run = Run(
                    part,
                    f"{name}-on-{task}",
                    "eval",
                    (str(single.out),),
                    options,
                    out,
                    scored,
                    group,
                    seed,
                )
                runs.append(run)
    return runs


def decoder_router(study: Study) -> list[Run]:
    recipe = study.recipe("quickstart_lm.yaml")
    variants = dict(list(ROUTER_VARIANTS.items())[:1]) if study.quick else ROUTER_VARIANTS
    return [
        train_run(
            study,
            "decoder-router",
            f"{name}-seed{seed}",
            recipe,
            (*overrides, "train.log_steps=10"),
            name,
            seed,
        )
        for name, overrides in variants.items()
        for seed in study.seeds
    ]


PARTS: dict[str, Callable[[Study], list[Run]]] = {
    "glue-mixture": glue_mixture,
    "glue-single": glue_single,
    "decoder-granularity": decoder_granularity,
    "decoder-merging": decoder_merging,
    "decoder-router": decoder_router,
    "minilm-granularity": minilm_granularity,
}


def part_dir(study: Study, part: str) -> Path:
    """Where a part's runs go (glue-mixture's in runs/study/glue, as its recipe documents)."""
    return study.out / ("glue" if part == "glue-mixture" else part)


def plan_part(study: Study, part: str) -> list[Run]:
    if part not in PARTS:
        raise UserInputError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    return PARTS[part](study)
