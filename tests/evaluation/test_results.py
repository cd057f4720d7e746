"""Results files: the earlier format is read, converted; the untrained baseline beside."""

import json

import pytest

from smora_cli.errors import UserInputError
from smora_cli.evaluation.results import (
    find_results,
    load_results,
    load_untrained,
    metric_values,
    untrained_path,
)
from smora_cli.reporting import print_eval

LEGACY_TRAIN = {  # what `smora train` wrote as eval_results.json before this format
    "split": "validation",
    "tasks": {
        "sent": {"metrics": {"accuracy": 0.8}, "score": 0.8, "n": 24},
        "sim": {"metrics": {"pearson": 0.5, "spearmanr": None}, "score": 0.25, "n": 24},
    },
    "average": 0.525,
    "baseline": {
        "tasks": {
            "sent": {"metrics": {"accuracy": 0.5}, "score": 0.5, "n": 24},
            "sim": {"metrics": {"pearson": 0.1, "spearmanr": 0.0}, "score": 0.05, "n": 24},
        },
        "average": 0.275,
    },
}
LEGACY_EVAL = {  # and `smora eval` as eval_<split>.json
    "model": "m",
    "kind": "causal-lm",
    "adapter": "runs/x/adapter",
    "adapter_sha256": "ab" * 32,
    "run_dir": "runs/x",
    "date": "2025-01-01T00:00:00+00:00",
    "versions": {"torch": "2.0"},
    "split": "validation",
    "tasks": {
        "cola": {"metrics": {"matthews_correlation": 0.3}, "score": 0.3, "n": 10},
        "rte": {"metrics": {"accuracy": 0.6}, "score": 0.6, "n": 10},
    },
    "average": 0.45,
    "glue_average": 0.45,
    "glue_tasks": ["cola", "rte"],
}


def test_earlier_train_file_is_converted_with_its_baseline(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.json").write_text(json.dumps(LEGACY_TRAIN))
    path = find_results(run)
    assert path == run / "eval_results.json"  # the fallback when eval_validation.json is absent
    report = load_results(path)
    assert report["format"] == "smora-eval/1"
    assert report["results"]["sent"] == {"alias": "sent", "accuracy": 0.8}
    assert metric_values(report, "sim") == {"pearson": 0.5, "spearmanr": None}
    assert report["scores"] == {"sent": 0.8, "sim": 0.25} and report["average"] == 0.525
    assert report["n-samples"]["sim"] == {"original": None, "effective": 24}
    assert report["config"]["split"] == "validation"
    assert report["higher_is_better"]["sim"] == {"pearson": True, "spearmanr": True}
    baseline = load_untrained(path, report)
    assert baseline["scores"] == {"sent": 0.5, "sim": 0.05} and baseline["average"] == 0.275
    print_eval(report, path)
    table = capsys.readouterr().out
    assert "untrained" in table and "0.2750" in table and "n/a" in table


def test_earlier_eval_file_keeps_its_provenance_and_glue_score(tmp_path):
    path = tmp_path / "eval_validation.json"
    path.write_text(json.dumps(LEGACY_EVAL))
    report = load_results(path)
    assert report["config"]["adapter_sha256"] == "ab" * 32 and report["config"]["model"] == "m"
    assert report["versions"] == {"torch": "2.0"} and report["date"].startswith("2025")
    assert report["glue"]["score"] == 0.45 and report["glue"]["tasks"] == ["cola", "rte"]
    assert "qqp" in report["glue"]["missing"] and "cola" not in report["glue"]["missing"]
    assert load_untrained(path) is None
    assert find_results(tmp_path) == path


def test_a_baseline_scored_another_way_is_not_shown(tmp_path):
    path = tmp_path / "eval_validation.json"
    path.write_text(json.dumps(LEGACY_EVAL))
    report = load_results(path)
    other = {**report, "config": {**report["config"], "limit": 5}}
    untrained_path(path).write_text(json.dumps(other))
    assert load_untrained(path, report) is None
    assert load_untrained(path, other)["config"]["limit"] == 5


def test_not_a_results_file(tmp_path):
    (tmp_path / "x.json").write_text('{"loss": 1}')
    with pytest.raises(UserInputError, match="not a smora results file"):
        load_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(UserInputError, match="cannot be read as JSON"):
        load_results(tmp_path / "y.json")
    assert find_results(tmp_path) is None


def test_higher_is_better_comes_from_the_metric_specs(monkeypatch, tmp_path):
    import dataclasses

    from smora_cli.evaluation import metrics

    lower = dataclasses.replace(metrics.METRICS["pearson"], greater_is_better=False)
    monkeypatch.setitem(metrics.METRICS, "pearson", lower)  # as a loss-like metric would be
    (tmp_path / "eval_results.json").write_text(json.dumps(LEGACY_TRAIN))
    report = load_results(tmp_path / "eval_results.json")
    assert report["higher_is_better"]["sim"] == {"pearson": False, "spearmanr": True}
    assert report["higher_is_better"]["sent"] == {"accuracy": True}
