"""Finished runs' results read back into tables: mean ± std over seeds per row.

Scores come from the results files the commands wrote (`eval_<split>.json` of a train run or a
sweep cell, the `--output-path` of an eval run), read by `evaluation.results.load_results`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from smora_cli.evaluation.results import find_results, load_results
from smora_cli.recipe import RESOLVED_NAME, read_run_settings
from smora_cli.study.plan import Run
from smora_cli.study.stats import Finding, compare, fmt, mean_std
from smora_cli.train import RANK_MAP_FILE
from smora_cli.utils.schema import read_yaml

AVERAGE = "average"
ROUTER_STATS = ("mean_entropy", "min_entropy", "max_load")
IMBALANCED = "imbalanced_layers"  # layers where one expert takes > 90 % of the tokens

Scores = dict[str, dict[int, dict[str, float]]]  # group -> seed -> task -> score


def results_file(run: Run) -> Path | None:
    """The results file of a finished run that scores tasks (merges score nothing)."""
    if run.command == "merge" or not run.result.is_file():
        return None
    if run.command == "sweep-granularity":  # the cell's evaluation on its recipe's split
        cell = run.result.parent
        return find_results(cell, read_run_settings(cell).eval.split)
    return run.result


def collect_scores(runs: list[Run]) -> Scores:
    """Each group's task scores per seed; runs of one group and seed may score other tasks."""
    scores: Scores = {}
    for run in runs:
        path = results_file(run)
        if path is not None:
            seed_scores = scores.setdefault(run.group, {}).setdefault(run.seed, {})
            seed_scores.update(load_results(path)["scores"])
    return scores


def tasks_of(scores: Scores) -> list[str]:
    return list(dict.fromkeys(t for seeds in scores.values() for s in seeds.values() for t in s))


def averages(seeds: dict[int, dict[str, float]], tasks: list[str]) -> list[float]:
    """Per seed, the mean over `tasks`; a seed missing one of them has no average."""
    return [
        statistics.fmean(by_task[t] for t in tasks)
        for by_task in seeds.values()
        if all(t in by_task for t in tasks)
    ]


def values(seeds: dict[int, dict[str, float]], task: str, tasks: list[str]) -> list[float]:
    """One column's values over seeds (`average`: the per-seed mean over `tasks`)."""
    if task == AVERAGE:
        return averages(seeds, tasks)
    return [by_task[task] for by_task in seeds.values() if task in by_task]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def score_table(scores: Scores) -> str:
    """Rows: groups; columns: each task and the average, mean ± std over seeds."""
    tasks = tasks_of(scores)
    rows = [
        [group, str(len(seeds)), *(fmt(values(seeds, t, tasks)) for t in [*tasks, AVERAGE])]
        for group, seeds in scores.items()
    ]
    return md_table(["run", "seeds", *tasks, AVERAGE], rows)


def rank_table(scores: Scores) -> str:
    """MoRE's rank-sensitivity table: groups `<task>-r<R>` pivoted to a row per task, a
    column per rank, the rank with the best mean and the ranks seed noise cannot tell from it."""
    by_task: dict[str, dict[int, list[float]]] = {}
    for group, seeds in scores.items():
        task, _, rank = group.rpartition("-r")
        by_task.setdefault(task, {})[int(rank)] = values(seeds, task, [task])
    ranks = sorted({r for per_rank in by_task.values() for r in per_rank})
    rows = []
    for task, per_rank in by_task.items():
        means = {r: mean_std(v)[0] for r, v in per_rank.items() if mean_std(v) is not None}
        best = max(means, key=means.get) if means else None
        cells = [fmt(per_rank.get(r, [])) for r in ranks]
        if best is None:
            rows.append([task, *cells, "n/a", "n/a"])
        else:
            rows.append([task, *cells, f"r={best}", ranks_tied_with(per_rank, best)])
    header = ["task", *(f"r={r}" for r in ranks), "best rank", "within noise of it"]
    return md_table(header, rows)


def ranks_tied_with(per_rank: dict[int, list[float]], best: int) -> str:
    """The other ranks whose scores are within two Welch standard errors of the best rank's
    (the study's verdict rule): a "best rank" is only a finding against the ranks not listed."""
    findings = {
        rank: compare("", "", per_rank[best], scores, expected=1)
        for rank, scores in per_rank.items()
        if rank != best and mean_std(scores) is not None
    }
    if any(f.seeds < 2 for f in findings.values()):
        return "one seed"
    tied = [f"r={rank}" for rank, f in sorted(findings.items()) if not f.resolved]
    return ", ".join(tied) or "none"


def drops(scores: Scores, group: str, reference: str = "single") -> dict[str, list[float]]:
    """A merged group's score minus its set's single-task adapters', per task, over the seeds
    (the seed pairs a merge with the adapters it merged); `average` is the per-seed mean drop
    over the tasks that seed has on both sides."""
    adapter_set = group.partition(":")[0]
    singles = scores.get(f"{adapter_set}:{reference}", {})
    per_task: dict[str, list[float]] = {}
    mean_drops = []
    for seed, by_task in scores.get(group, {}).items():
        paired = {t: v - singles[seed][t] for t, v in by_task.items() if t in singles.get(seed, {})}
        for task, drop in paired.items():
            per_task.setdefault(task, []).append(drop)
        if paired:
            mean_drops.append(statistics.fmean(paired.values()))
    return {**per_task, AVERAGE: mean_drops}


def drop_table(scores: Scores, reference: str = "single") -> str:
    """Merging: a row per merged group, its drop per task and on average, mean ± std."""
    tasks = [*tasks_of(scores), AVERAGE]
    rows = [
        [group, *(fmt(drops(scores, group, reference).get(t, [])) for t in tasks)]
        for group in scores
        if not group.endswith(f":{reference}")
    ]
    return md_table(["merge", *tasks], rows)


def router_points(run_dir: Path) -> list[dict]:
    """The router statistics `smora train` logged to metrics.jsonl, one dict per step."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        router = entry.get("router")
        if router:
            stats = {k: router[k] for k in ROUTER_STATS}
            points.append(
                {"step": entry["step"], **stats, IMBALANCED: len(router.get("imbalanced", {}))}
            )
    return points


def router_table(runs: list[Run]) -> str:
    """Load entropy, the busiest expert's share of the picks and the number of imbalanced
    layers at the first and last step every seed of a group logged, mean ± std over seeds."""
    per_group: dict[str, list[dict[int, dict]]] = {}
    for run in runs:
        if run.result.is_file():
            points = {p["step"]: p for p in router_points(run.out)}
            per_group.setdefault(run.group, []).append(points)
    rows = []
    for group, seeds in per_group.items():
        steps = sorted(set.intersection(*(set(points) for points in seeds)))
        for step in dict.fromkeys([steps[0], steps[-1]] if steps else []):
            cells = [fmt([points[step][key] for points in seeds]) for key in ROUTER_STATS]
            imbalanced = fmt([points[step][IMBALANCED] for points in seeds], 1)
            rows.append([group, str(step), *cells, imbalanced])
    return md_table(["run", "step", *ROUTER_STATS, IMBALANCED], rows)


def rank_map_table(runs: list[Run]) -> str:
    """MoRE's learned ranks per task (the `rank_map.json` a MoRE run writes): over the adapted
    layers, the mean rank, the share of layers at rank 1 and at the full rank R (the run's
    `adapter.r`); mean ± std over seeds."""
    per_task: dict[str, list[tuple[float, float, float]]] = {}
    for run in runs:
        path = run.out / RANK_MAP_FILE
        if not path.is_file() or not run.result.is_file():
            continue
        full = read_yaml(run.out / RESOLVED_NAME, "resolved recipe")["adapter"]["r"]
        for task, layers in json.loads(path.read_text()).items():
            ranks = list(layers.values())
            per_task.setdefault(task, []).append(
                (
                    statistics.fmean(ranks),
                    sum(r == 1 for r in ranks) / len(ranks),
                    sum(r == full for r in ranks) / len(ranks),
                )
            )
    rows = [
        [task, *(fmt([seed[i] for seed in seeds], 2) for i in range(3))]
        for task, seeds in per_task.items()
    ]
    return md_table(["task", "mean rank over layers", "layers at rank 1", "layers at rank R"], rows)


def finding(scores: Scores, claim: dict) -> Finding:
    """A claim `{claim, a, b, expected}` on groups a and b; `task` (default: the average)
    picks a column; `measure: drop` compares merge drops instead of scores."""
    task = claim.get("task", AVERAGE)
    comparison = f"{claim['a']} minus {claim['b']}" + ("" if task == AVERAGE else f" on {task}")
    if claim.get("measure") == "drop":
        sides = [drops(scores, claim[side]).get(task, []) for side in ("a", "b")]
        return compare(claim["claim"], comparison, *sides, claim["expected"], unit="drop")
    tasks = tasks_of({g: scores.get(g, {}) for g in (claim["a"], claim["b"])})
    sides = [values(scores.get(claim[side], {}), task, tasks) for side in ("a", "b")]
    unit = "average score" if task == AVERAGE else "score"
    return compare(claim["claim"], comparison, *sides, claim["expected"], unit=unit)
