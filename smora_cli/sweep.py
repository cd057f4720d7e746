"""`smora sweep-granularity`: SMoRA's granularity study as one resumable, splittable command.

Total rank r and activated rank k stay fixed; the rank per expert p varies, so each cell has
E = r/p experts of which k/p are active. LoRA baselines at rank k (same activated rank) and at
rank r (same total rank) frame the grid; every cell runs for several seeds. All else (data,
steps, learning rate, alpha, hence the alpha/k scaling of smora and moe-lora) comes from the
base recipe. Each cell trains and evaluates through `smora train`, in its own run directory;
finished cells are skipped, half-finished ones resume from their last checkpoint.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import io
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.methods import method_of, methods_where
from smora_cli.checkpoint import recipe_changes
from smora_cli.errors import AdapterConfigError, RecipeError, Stopped, UserInputError
from smora_cli.evaluation.results import metric_values
from smora_cli.recipe import Recipe, SweepSection, recipe_from_dict
from smora_cli.utils.fs import atomic_write_bytes, atomic_write_text
from smora_cli.utils.lock import DirectoryLock, DirectoryLocked
from smora_cli.utils.schema import dataclass_from

CELL_FILE = "cell.json"


# The methods whose granularity p the study varies: those that route ranks per token.
SWEPT = methods_where("token_routed")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    index: int
    method: str
    r: int
    k: int
    expert_rank: int  # p
    seed: int
    baseline: bool = False

    @property
    def experts(self) -> int:
        return self.r // self.expert_rank

    @property
    def active_experts(self) -> int:
        return self.k // self.expert_rank

    @property
    def name(self) -> str:
        if self.baseline:
            return f"{self.method}-r{self.r}-seed{self.seed}"
        return f"{self.method}-p{self.expert_rank}-seed{self.seed}"

    def overrides(self) -> dict:
        """The adapter keys this cell sets on top of the base recipe."""
        adapter = {"method": self.method, "r": self.r, "expert_rank": self.expert_rank}
        adapter["k"] = self.k if method_of(self.method).token_routed else None
        return adapter


def plan_cells(sweep: SweepSection, echo=print) -> list[Cell]:
    """The grid in a fixed order; impossible combinations are skipped with a message."""
    r, k = sweep.r, sweep.k
    if not sweep.seeds:
        raise UserInputError("--seeds: no seed given; e.g. --seeds 1,2,3")
    if sweep.methods and not sweep.expert_ranks:
        raise UserInputError("--expert-ranks: no expert rank given; e.g. --expert-ranks 1,2,4,8")
    if not 1 <= k <= r:
        raise UserInputError(f"sweep.k ({k}) must be between 1 and sweep.r ({r}) (flags --k, --r)")
    configs = []
    for method in sweep.methods:
        if method not in SWEPT:
            raise UserInputError(
                f"--methods: {method!r} is not a rank-expert method to sweep; "
                f"choose from {', '.join(SWEPT)} (LoRA goes in --baselines)"
            )
        for p in sweep.expert_ranks:
            reason = _skip_reason(method, r, k, p)
            if reason:
                echo(f"skipping {method} p={p}: {reason}")
            else:
                configs.append((method, r, k, p, False))
    for spec in sweep.baselines:
        method, _, rank = spec.partition(":")
        if method != "lora" or not rank.isdigit() or int(rank) < 1:
            raise UserInputError(f"--baselines: {spec!r} must look like lora:RANK (e.g. lora:8)")
        configs.append(("lora", int(rank), int(rank), 1, True))
    cells = []
    for method, rank, active, p, baseline in configs:
        for seed in sweep.seeds:
            cells.append(Cell(len(cells), method, rank, active, p, seed, baseline))
    if not cells:
        raise UserInputError("the sweep has no valid cell; check --expert-ranks and --methods")
    return cells


def sweep_section(section: SweepSection, flags: dict) -> SweepSection:
    """The recipe's `sweep:` with the command line's flags (those not None) on top, checked
    by the same schema as the recipe (keys and types).

    Raises:
        RecipeError: a flag's value does not fit its key.
    """
    raw = {**asdict(section), **{key: v for key, v in flags.items() if v is not None}}
    problems: list[str] = []
    merged = dataclass_from(SweepSection, raw, "sweep", problems)
    if problems:
        raise RecipeError(problems, source="command line")
    return merged


def cell_lines(cells: list[Cell]) -> list[str]:
    """The plan as `--list-cells` prints it: a line per cell, then the SLURM array that runs
    it (one array task per cell)."""
    lines = [
        f"{c.index:3d}  {c.name:24s} method={c.method} r={c.r} k={c.k} p={c.expert_rank} "
        f"E={c.experts} active={c.active_experts}"
        for c in cells
    ]
    return [*lines, f"{len(cells)} cells; as a SLURM array: sbatch --array=0-{len(cells) - 1} ..."]


def _skip_reason(method: str, r: int, k: int, p: int) -> str | None:
    """Why an adapter of `method` with these ranks cannot exist (the adapter's own rules)."""
    try:
        AdapterConfig(method=method, r=r, k=k, expert_rank=p)
    except AdapterConfigError as e:
        return str(e)
    return None


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def cell_recipe(base: Recipe, cell: Cell, out: Path) -> Recipe:
    """The base recipe with the cell's adapter, seed and run directory."""
    data = copy.deepcopy(base.to_dict())
    data["adapter"].update(cell.overrides())
    data["adapter"].pop("task_names")  # the recipe fills it for task-routed methods
    data["train"].update(seed=cell.seed, output_dir=str(cell_dir(out, cell)))
    data["eval"]["at_end"] = True  # a cell's result is its final evaluation
    return recipe_from_dict(data, source=base.source)


def _finished(cell_dir: Path) -> dict | None:
    path = cell_dir / CELL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_cell(base: Recipe, cell: Cell, out: Path, echo=print, *, overwrite: bool = False) -> dict:
    """Train and evaluate one cell, holding its directory, or reuse its finished result.

    A cell's earlier run (finished or interrupted) is reused only if it ran the same
    resolved recipe; `overwrite` replaces one that did not.

    Raises:
        UserInputError: the cell's directory holds a run of another recipe (without
            `overwrite`), or another process holds it (`DirectoryLocked`).
    """
    recipe = cell_recipe(base, cell, out)
    with DirectoryLock(recipe.output_dir, f"sweep-granularity (cell {cell.index})"):
        changes = recipe_changes(recipe.output_dir, recipe, ignore=("sweep",))
        if changes and not overwrite:
            shown = "; ".join(changes[:3]) + (
                f"; and {len(changes) - 3} more" if changes[3:] else ""
            )
            raise UserInputError(
                f"cell {cell.index} ({cell.name}) in {recipe.output_dir} ran another recipe "
                f"({shown}); pass --overwrite to rerun the changed cells, or use another --out"
            )
        done = None if changes else _finished(recipe.output_dir)
        if done is not None:
            echo(f"cell {cell.index} ({cell.name}) already finished with this recipe")
            return done
        return _train_cell(recipe, cell, echo, replace=bool(changes))


def _train_cell(recipe: Recipe, cell: Cell, echo, *, replace: bool) -> dict:
    from smora_cli.train import run

    echo(
        f"cell {cell.index} ({cell.name}): {cell.method} r={cell.r} k={cell.k} "
        f"p={cell.expert_rank} E={cell.experts}"
    )
    resume = not replace and recipe.output_dir.is_dir() and any(recipe.output_dir.iterdir())
    started = time.perf_counter()
    result = run(recipe, resume=resume, overwrite=replace, show_progress=False, echo=echo)
    if result.status != "completed":
        raise Stopped(
            f"cell {cell.index} ({cell.name}) stopped at step {result.step} with a "
            "checkpoint; run the same command again to resume it",
            result.exit_code,
        )
    record = {
        **asdict(cell),
        "name": cell.name,
        "experts": cell.experts,
        "active_experts": cell.active_experts,
        "tasks": dict(result.eval["scores"]),
        "metrics": {task: metric_values(result.eval, task) for task in result.eval["scores"]},
        "average": result.eval["average"],
        "trainable_params": result.params.adapter,
        "activated_params": result.params.activated,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        **_router_balance(recipe.output_dir),
    }
    atomic_write_text(recipe.output_dir / CELL_FILE, json.dumps(record, indent=2) + "\n")
    return record


def _router_balance(run_dir: Path) -> dict:
    """Router entropy/max load at the last logging step (1 = perfectly balanced)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    router = json.loads(lines[-1]).get("router") if lines else None
    if not router:
        return {"router_entropy": None, "router_max_load": None}
    return {"router_entropy": router["mean_entropy"], "router_max_load": router["max_load"]}


# --------------------------------------------------------------------------- results
def collect(cells: list[Cell], out: Path) -> list[dict]:
    """Results of every finished cell, in grid order."""
    return [record for cell in cells if (record := _finished(cell_dir(out, cell))) is not None]


def write_results(records: list[dict], tasks: list[str], out: Path) -> dict[str, Path]:
    """results.csv, results.json, results.md (mean ± std over seeds) and granularity.png."""
    columns = [
        "index",
        "name",
        "method",
        "expert_rank",
        "experts",
        "k",
        "r",
        "active_experts",
        "seed",
        "baseline",
        *tasks,
        "average",
        "trainable_params",
        "activated_params",
        "train_seconds",
        "router_entropy",
        "router_max_load",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({**record, **record["tasks"]})
    paths = {
        "csv": out / "results.csv",
        "json": out / "results.json",
        "markdown": out / "results.md",
    }
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["json"], json.dumps(records, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown_table(records, tasks))
    if can_plot():
        paths["plot"] = out / "granularity.png"
        plot(records, paths["plot"])
    return paths


def can_plot() -> bool:
    """matplotlib comes with the `plot` extra; without it the sweep writes its tables only."""
    return importlib.util.find_spec("matplotlib") is not None


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        key = (
            record["method"],
            record["r"],
            record["k"],
            record["expert_rank"],
            record["baseline"],
        )
        groups.setdefault(key, []).append(record)
    return groups


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def markdown_table(records: list[dict], tasks: list[str]) -> str:
    """One row per (method, p) or baseline; mean ± std over seeds."""
    header = [
        "method",
        "p",
        "E",
        "k/p",
        "seeds",
        *tasks,
        "average",
        "trainable",
        "activated",
        "train s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, r, _, p, baseline), group in _groups(records).items():
        first = group[0]
        label = f"lora r={r}" if baseline else method
        cells = [
            label,
            "-" if baseline else str(p),
            "-" if baseline else str(first["experts"]),
            "-" if baseline else str(first["active_experts"]),
            str(len(group)),
        ]
        cells += [_mean_std([g["tasks"].get(t) for g in group]) for t in tasks]
        cells += [
            _mean_std([g["average"] for g in group]),
            f"{first['trainable_params']:,}",
            f"{first['activated_params']:,}",
            f"{statistics.fmean(g['train_seconds'] for g in group):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Average score vs expert rank per method, baselines as horizontal lines, ±1 std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    expert_ranks = sorted({r["expert_rank"] for r in records if not r["baseline"]}) or [1]
    styles = iter(["--", ":", "-."])
    for (_, rank, _, _, baseline), group in _groups(records).items():
        if not baseline:
            continue
        scores = [g["average"] for g in group]
        mean = statistics.fmean(scores)
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        axis.axhline(
            mean, linestyle=next(styles, "--"), color="grey", label=f"LoRA r={rank} ({mean:.3f})"
        )
        axis.axhspan(mean - std, mean + std, color="grey", alpha=0.12)
    for method in dict.fromkeys(r["method"] for r in records if not r["baseline"]):
        points = sorted(
            (key[3], group)
            for key, group in _groups(records).items()
            if key[0] == method and not key[4]
        )
        xs = [p for p, _ in points]
        means = [statistics.fmean(g["average"] for g in group) for _, group in points]
        stds = [
            statistics.stdev([g["average"] for g in group]) if len(group) > 1 else 0.0
            for _, group in points
        ]
        axis.errorbar(xs, means, yerr=stds, marker="o", capsize=4, label=method)
    axis.set_xscale("log", base=2)
    axis.set_xticks(expert_ranks, [str(p) for p in expert_ranks])
    axis.invert_xaxis()  # finer granularity (smaller p) to the right
    axis.set_xlabel("rank per expert p (total and activated rank fixed)")
    axis.set_ylabel("average task score")
    axis.set_title("Granularity: score vs rank per expert")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=130)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def run_sweep(
    base: Recipe,
    sweep: SweepSection,
    *,
    cell_index: int | None = None,
    overwrite: bool = False,
    echo=print,
) -> tuple[list[dict], dict[str, Path] | None]:
    """Run every cell (or one), then write the results of all finished cells.

    A whole sweep leaves a cell that another process is training to that process (several
    workers may share one sweep); `--cell I` on a busy cell is refused.
    """
    out = Path(sweep.output_dir)
    cells = plan_cells(sweep, echo)
    if not can_plot():
        echo(f"note: no {out}/granularity.png without matplotlib: pip install 'smora-cli[plot]'")
    if cell_index is not None and not 0 <= cell_index < len(cells):
        raise UserInputError(
            f"--cell {cell_index} is out of range: the grid has {len(cells)} "
            f"cells (0..{len(cells) - 1}; see --list-cells)"
        )
    for cell in cells if cell_index is None else [cells[cell_index]]:
        try:
            run_cell(base, cell, out, echo, overwrite=overwrite)
        except DirectoryLocked as e:
            if cell_index is not None:
                raise
            echo(f"skipping cell {cell.index} ({cell.name}): {e}")
    records = collect(cells, out)
    echo(f"{len(records)} of {len(cells)} cells finished")
    if not records:
        return records, None
    tasks = [t.name for t in base.tasks]
    paths = write_results(records, tasks, out)
    echo(f"results written to {out}/: {', '.join(path.name for path in paths.values())}")
    return records, paths
