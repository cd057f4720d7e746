"""Real GLUE: each task's metrics on the real validation labels, `smora eval` over the GLUE
folder (missing tasks named or skipped), and a short MiniLM run that beats the untrained model."""

import json
import sys

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from smora_cli.cli import main
from smora_cli.data.glue import GLUE_TASKS
from smora_cli.evaluation.metrics import compute, glue_average, glue_task_score
from smora_cli.evaluation.results import load_results, untrained_path
from smora_cli.recipe import recipe_from_dict
from smora_cli.reporting import print_eval
from smora_cli.train import run
from tests.real_glue import GLUE_DIR, VALIDATION_SIZES, arrow_split, requires_glue

pytestmark = requires_glue
TOL = 1e-9


def noisy_predictions(task, labels, seed):
    """A seeded imperfect model: a third of the labels replaced at random (STS-B: noise)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if task == "stsb":
        return labels + rng.normal(0, 1.2, len(labels))
    flip = rng.random(len(labels)) < 1 / 3
    classes = len(GLUE_TASKS[task].label_names)
    return np.where(flip, rng.integers(0, classes, len(labels)), labels)


def library_metrics(task, pred, ref):
    """Each GLUE task's metrics by scikit-learn / SciPy, keyed as smora reports them."""
    return {
        "cola": lambda: {"matthews_correlation": skm.matthews_corrcoef(ref, pred)},
        "mrpc": lambda: {"accuracy": skm.accuracy_score(ref, pred), "f1": skm.f1_score(ref, pred)},
        "stsb": lambda: {
            "pearson": stats.pearsonr(pred, ref)[0],
            "spearmanr": stats.spearmanr(pred, ref)[0],
        },
    }.get(task, lambda: {"accuracy": skm.accuracy_score(ref, pred)})()


def test_each_tasks_metrics_on_the_real_validation_labels():
    per_task, scores = {}, {}
    for seed, task in enumerate(VALIDATION_SIZES):
        ref = np.asarray(arrow_split(task)["label"])
        pred = noisy_predictions(task, ref, seed)
        expected = library_metrics(task, pred, ref)
        got = {}
        for metric in GLUE_TASKS[task].metrics:
            got.update(compute(metric, pred, ref, bootstrap_iters=200))
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=TOL), (task, key)
            assert 0 < got[f"{key}_stderr"] < 0.1  # defined, and small on hundreds of examples
        per_task[task] = got
        scores[task] = float(np.mean(list(expected.values())))  # GLUE: mean of a task's metrics
        assert glue_task_score(task, got) == pytest.approx(scores[task], abs=TOL)
    # Leaderboard averaging: MNLI-m and -mm are one task, so 7 tasks weigh the same.
    mnli = (scores.pop("mnli_matched") + scores.pop("mnli_mismatched")) / 2
    expected_glue = (sum(scores.values()) + mnli) / 7
    assert glue_average(per_task) == pytest.approx(expected_glue, abs=TOL)


def smora_eval(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["smora", "eval", *argv])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def test_eval_over_the_glue_folder_names_or_skips_missing_tasks(
    tmp_path, decoder_dir, monkeypatch, capsys
):
    base = ["--model", str(decoder_dir), "--kind", "causal-lm", "--data-dir", str(GLUE_DIR)]
    base += ["--limit", "3", "--batch-size", "8", "--bootstrap-iters", "20"]
    code, out, err = smora_eval([*base, "--tasks", "glue"], monkeypatch, capsys)
    assert code == 2
    assert err.splitlines()[0] == (
        f"error: no 'validation' split for task(s) qqp, wnli in {GLUE_DIR}; "
        "pass --skip-missing to score the others"
    )
    out_path = tmp_path / "all.json"
    tasks = "cola,mrpc,rte,stsb,sst2,qnli,mnli"
    code, out, err = smora_eval(
        [*base, "--tasks", tasks, "--output-path", str(out_path)], monkeypatch, capsys
    )
    assert code == 0, err
    report = json.loads(out_path.read_text())
    names = ["cola", "mrpc", "rte", "stsb", "sst2", "qnli", "mnli_matched", "mnli_mismatched"]
    assert list(report["results"]) == names
    assert report["n-samples"]["qnli"] == {"original": 5463, "effective": 3}
    assert report["glue"]["tasks"] == sorted(names) and report["glue"]["missing"] == [
        "qqp",
        "wnli",
    ]
    assert "GLUE score" in out and "7 of 9 tasks" in out
    # --skip-missing scores the same tasks as naming the present ones.
    skipped = tmp_path / "skip.json"
    code, out, err = smora_eval(
        [*base, "--tasks", "glue", "--skip-missing", "--output-path", str(skipped)],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert "skipping task(s) without a 'validation' split" in out and "qqp, wnli" in out
    assert json.loads(skipped.read_text())["results"] == report["results"]


def minilm_glue_recipe(out):
    tasks = [
        {"name": name, "source": f"glue:{name}", "data_dir": str(GLUE_DIR)}
        for name in ("cola", "mrpc", "rte", "stsb")
    ]
    return {
        "model": {
            "name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
            "kind": "classifier",
            "max_length": 48,
        },
        "adapter": {"method": "lora", "r": 8, "alpha": 16},
        "tasks": tasks,
        "mixing": {"strategy": "uniform"},
        "train": {
            "output_dir": str(out),
            "max_steps": 24,
            "batch_size": 16,
            "lr": 2e-3,
            "save_steps": 1000,
            "log_steps": 8,
            "seed": 0,
        },
        "eval": {"batch_size": 96, "limit": 96, "baseline": True},
    }


def test_short_minilm_run_beats_the_untrained_model_on_glue(tmp_path, capsys):
    out = tmp_path / "run"
    result = run(recipe_from_dict(minilm_glue_recipe(out)), show_progress=False, echo=print)
    report = result.eval
    baseline = load_results(untrained_path(out / "eval_validation.json"))
    assert report["glue"]["tasks"] == ["cola", "mrpc", "rte", "stsb"]
    # The GLUE score is the leaderboard average of the task scores written in the file.
    r = report["results"]
    by_hand = (
        r["cola"]["matthews_correlation"]
        + (r["mrpc"]["accuracy"] + r["mrpc"]["f1"]) / 2
        + r["rte"]["accuracy"]
        + (r["stsb"]["pearson"] + r["stsb"]["spearmanr"]) / 2
    ) / 4
    assert report["glue"]["score"] == pytest.approx(by_hand, abs=TOL)
    assert report["glue"]["score"] > baseline["glue"]["score"] + 0.05
    capsys.readouterr()
    print_eval(report, out / "eval_validation.json")
    table = capsys.readouterr().out
    glue_row = next(line for line in table.splitlines() if "GLUE score" in line)
    assert "4 of 9 tasks" in glue_row
    assert f"{report['glue']['score']:.4f}" in glue_row
    assert f"{baseline['glue']['score']:.4f}" in glue_row
    print(table)  # the GLUE table of this run, for the record (pytest -s shows it)
