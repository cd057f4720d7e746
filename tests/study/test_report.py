"""Tables and the report (smora_cli/study/collect.py, report.py) from fake results files."""

import json
import math
import statistics
from pathlib import Path

import pytest

from smora_cli.errors import UserInputError
from smora_cli.study import collect, report
from smora_cli.study.plan import Study, plan_part


def results(path: Path, scores: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "results": {t: {"alias": t, "acc": s} for t, s in scores.items()},
        "config": {"split": "validation"},
        "scores": scores,
        "average": statistics.fmean(scores.values()),
    }
    path.write_text(json.dumps(body))


def mixture_study(tmp_path) -> tuple[Study, list]:
    """glue-mixture with more and lora finished on three seeds, smora on one."""
    study = Study(out=tmp_path)
    runs = plan_part(study, "glue-mixture")
    scores = {
        "more": [(0.50, 0.70), (0.52, 0.72), (0.54, 0.74)],
        "lora": [(0.40, 0.60), (0.41, 0.61), (0.45, 0.65)],
        "smora": [(0.30, 0.20)],
    }
    for run in runs:
        if run.group in scores and run.seed <= len(scores[run.group]):
            cola, rte = scores[run.group][run.seed - 1]
            results(run.result, {"cola": cola, "rte": rte})
    return study, runs


def test_score_table_is_mean_and_std_over_seeds(tmp_path):
    _, runs = mixture_study(tmp_path)
    table = collect.score_table(collect.collect_scores(runs))
    assert table.splitlines() == [
        "| run | seeds | cola | rte | average |",
        "|---|---|---|---|---|",
        "| more | 3 | 0.520 ± 0.020 | 0.720 ± 0.020 | 0.620 ± 0.020 |",
        "| lora | 3 | 0.420 ± 0.026 | 0.620 ± 0.026 | 0.520 ± 0.026 |",
        "| smora | 1 | 0.300 | 0.200 | 0.250 |",
    ]


def test_findings_follow_the_claims_of_the_front_matter(tmp_path):
    study, runs = mixture_study(tmp_path)
    claims = {
        "glue-mixture": [
            {"claim": "MoRE beats LoRA", "a": "more", "b": "lora", "expected": 1},
            {"claim": "on rte", "a": "smora", "b": "lora", "expected": 1, "task": "rte"},
            {"claim": "absent", "a": "moe-lora", "b": "lora", "expected": 1},
        ],
        "glue-single": [{"claim": "r1 beats r8", "a": "mrpc-r1", "b": "mrpc-r8", "expected": 1}],
    }
    by_part = {part: plan_part(study, part) for part in ("glue-mixture", "glue-single")}
    lines = report.findings(by_part, claims).splitlines()
    se = math.sqrt(0.02**2 / 3 + (statistics.stdev([0.5, 0.51, 0.55])) ** 2 / 3)
    assert lines[0] == "| claim | part | comparison | difference | verdict |"
    assert lines[2] == (
        f"| MoRE beats LoRA | glue-mixture | more minus lora | +0.100 ± {se:.3f} average score "
        "| reproduced |"
    )
    assert lines[3] == ("| on rte | glue-mixture | smora minus lora on rte | -0.420 ± 0.015 score "
                        "| one seed: not tested |")  # fmt: skip
    assert lines[4] == "| absent | glue-mixture | moe-lora minus lora | n/a | not measured |"
    assert lines[5] == "| r1 beats r8 | glue-single | mrpc-r1 minus mrpc-r8 | n/a | not measured |"
    assert len(lines) == 6


def test_rank_table_pivots_task_and_rank_and_names_the_best(tmp_path):
    study = Study(out=tmp_path, seeds=(1, 2))
    for run in plan_part(study, "glue-single"):
        task, rank = run.group.rsplit("-r", 1)
        if task in ("mrpc", "rte"):
            best = 1 if task == "mrpc" else 4
            results(run.result, {task: 0.8 - 0.01 * abs(int(rank) - best) + 0.001 * run.seed})
    table = collect.rank_table(collect.collect_scores(plan_part(study, "glue-single")))
    header, _, mrpc, rte = table.splitlines()
    assert header == "| task | r=1 | r=2 | r=4 | r=8 | r=16 | best rank | within noise of it |"
    assert mrpc.startswith("| mrpc | 0.802 ± 0.001 | 0.792 ± 0.001 |")
    assert mrpc.endswith("| r=1 | none |")
    assert rte.endswith("| r=4 | none |")


def test_rank_table_lists_the_ranks_seed_noise_cannot_tell_from_the_best():
    scores = {
        "cola-r4": {1: {"cola": 0.50}, 2: {"cola": 0.60}},  # best mean, std 0.071
        "cola-r8": {1: {"cola": 0.48}, 2: {"cola": 0.58}},  # 0.02 below: inside 2 SE (0.1)
        "cola-r1": {1: {"cola": 0.10}, 2: {"cola": 0.11}},  # 0.445 below: outside
    }
    row = collect.rank_table(scores).splitlines()[2]
    assert row.endswith("| r=4 | r=8 |")
    one_seed = {group: {1: seeds[1]} for group, seeds in scores.items()}
    assert collect.rank_table(one_seed).splitlines()[2].endswith("| r=4 | one seed |")


def test_merge_drops_pair_each_merge_with_the_adapters_of_its_seed(tmp_path):
    study = Study(out=tmp_path, seeds=(1, 2))
    runs = plan_part(study, "decoder-merging")
    for run in runs:
        if run.command == "train" and run.group == "lora:single":
            results(run.result, {run.name.split("-")[1]: 0.9 if run.seed == 1 else 0.8})
        elif run.command == "eval" and run.group == "lora:mean":
            task = run.name.rsplit("-on-", 1)[1]
            results(run.result, {task: 0.7 if run.seed == 1 else 0.5})
    scores = collect.collect_scores(runs)
    assert scores["lora:mean"][2]["rte"] == 0.5
    drops = collect.drops(scores, "lora:mean")
    assert drops["qa_topic"] == pytest.approx([-0.2, -0.3])
    assert drops["average"] == pytest.approx([-0.2, -0.3])
    table = collect.drop_table(scores)
    assert "| lora:mean | -0.250 ± 0.071 |" in table
    assert "lora:single" not in table  # the reference is no merge


def test_router_table_reads_metrics_at_steps_every_seed_logged(tmp_path):
    study = Study(out=tmp_path, seeds=(1, 2))
    runs = plan_part(study, "decoder-router")[:2]
    for run, last in zip(runs, (0.9, 0.7), strict=True):
        results(run.result, {"sentiment": 0.5})
        imbalanced = {f"layers.{i}.q_proj": 0.95 for i in range(4 if last > 0.8 else 2)}
        lines = [
            {"step": 10, "router": {"mean_entropy": 0.5, "min_entropy": 0.2, "max_load": 0.3}},
            {"step": 20, "loss": 1.0},
            {
                "step": 30,
                "router": {
                    "mean_entropy": last,
                    "min_entropy": 0.4,
                    "max_load": 0.1,
                    "imbalanced": imbalanced,
                },
            },
        ]
        (run.out / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    rows = collect.router_table(runs).splitlines()[2:]
    assert rows == [
        "| balance-1e-5 | 10 | 0.500 ± 0.000 | 0.200 ± 0.000 | 0.300 ± 0.000 | 0.0 ± 0.0 |",
        "| balance-1e-5 | 30 | 0.800 ± 0.141 | 0.400 ± 0.000 | 0.100 ± 0.000 | 3.0 ± 1.4 |",
    ]


def test_report_fills_the_template_and_keeps_its_prose(tmp_path):
    study, _ = mixture_study(tmp_path)
    template = tmp_path / "template.md"
    template.write_text(
        "---\nclaims:\n  glue-mixture:\n    - {claim: C, a: more, b: lora, expected: 1}\n---\n"
        "# Title\n\nProse stays.\n\n{{findings:glue-mixture}}\n\n{{ progress:glue-mixture }}\n"
        "\n{{wall:glue-single}}\n"
    )
    target = report.write_report(template, tmp_path / "out" / "results.md", study)
    text = target.read_text()
    assert text.startswith("# Title\n\nProse stays.\n\n| claim | part |")
    assert "| C | glue-mixture | more minus lora | +0.100" in text
    assert "7 of 12 runs finished" in text
    assert "not run" in text
    assert "claims" not in text and "{{" not in text


def test_the_shipped_template_fills_with_no_runs(tmp_path):
    template = Path(__file__).resolve().parents[2] / "docs" / "results.template.md"
    text = report.fill(template.read_text(), Study(out=tmp_path))
    assert "{{" not in text
    assert "0 of 12 runs finished" in text


@pytest.mark.parametrize(
    "placeholder,message",
    [
        ("{{scores:nowhere}}", "names no part 'nowhere'"),
        ("{{findings:glue-mixture,nowhere}}", "names no part 'nowhere'"),
        ("{{scores:glue-mixture,glue-single}}", "only findings takes several parts"),
        ("{{plot:glue-mixture}}", "unknown kind 'plot'"),
    ],
)
def test_a_bad_placeholder_is_refused_and_nothing_is_written(tmp_path, placeholder, message):
    template = tmp_path / "t.md"
    template.write_text(f"text {placeholder}\n")
    target = tmp_path / "results.md"
    with pytest.raises(UserInputError, match=message):
        report.write_report(template, target, Study(out=tmp_path))
    assert not target.exists()


def test_sweep_cells_are_read_on_their_recipes_split(tmp_path):
    from smora_cli.recipe import load_recipe, save_resolved

    study = Study(out=tmp_path, seeds=(1,))
    runs = plan_part(study, "minilm-granularity")
    cell = runs[0].result.parent
    save_resolved(load_recipe("configs/study/mixture.yaml"), cell)  # eval.split: test
    results(cell / "eval_test.json", {"sentiment": 0.8})
    results(cell / "eval_validation.json", {"sentiment": 0.1})  # not what the recipe scored
    runs[0].result.write_text("{}")  # cell.json: the cell finished
    assert collect.collect_scores(runs) == {"smora-p8": {1: {"sentiment": 0.8}}}


def test_rank_map_table_summarises_more_runs_rank_maps_over_layers_and_seeds(tmp_path):
    import torch

    from smora_cli.adapters import AdapterConfig, adapter_layers, attach
    from smora_cli.adapters.state import rank_map
    from tests import tiny_models as tm

    _, runs = mixture_study(tmp_path)
    expected: dict[str, list[list[int]]] = {"cola": [], "rte": []}
    for seed, run in enumerate(r for r in runs if r.group == "more"):
        torch.manual_seed(seed)
        model = attach(tm.llama(), AdapterConfig(method="more", r=4, task_names=["cola", "rte"]))
        with torch.no_grad():
            for _, layer in adapter_layers(model):
                for param in layer.router.parameters():
                    param.normal_(std=3.0)
        (run.out / "resolved_recipe.yaml").write_text("adapter: {method: more, r: 4}\n")
        (run.out / "rank_map.json").write_text(json.dumps(rank_map(model)))  # as smora train
        for task, layers in rank_map(model).items():
            expected[task].append(list(layers.values()))
    rows = collect.rank_map_table(runs).splitlines()[2:]
    for row, (task, seeds) in zip(rows, expected.items(), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        means = [statistics.fmean(ranks) for ranks in seeds]
        at_one = [sum(r == 1 for r in ranks) / len(ranks) for ranks in seeds]
        at_full = [sum(r == 4 for r in ranks) / len(ranks) for ranks in seeds]
        assert cells[0] == task
        assert cells[1] == f"{statistics.fmean(means):.2f} ± {statistics.stdev(means):.2f}"
        assert cells[2] == f"{statistics.fmean(at_one):.2f} ± {statistics.stdev(at_one):.2f}"
        assert cells[3] == f"{statistics.fmean(at_full):.2f} ± {statistics.stdev(at_full):.2f}"
