"""Metrics: shipped evaluate modules agree with scikit-learn/scipy and with hand-computed values."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy import stats
from sklearn import metrics as skm

from smora_cli.errors import UserInputError
from smora_cli.evaluation import metrics, stderr
from smora_cli.evaluation.metrics import (
    GLUE_TASK_METRICS,
    METRICS,
    compute,
    glue_average,
    glue_task_score,
    primary_score,
)

SEEDS = [0, 1, 2, 3, 4]
TOL = 1e-9


def _labels(seed: int, n: int = 200, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, classes, n), rng.integers(0, classes, n)


# --- classification and regression against scikit-learn / scipy -------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed):
    pred, ref = _labels(seed, classes=3)
    assert compute("accuracy", pred, ref)["accuracy"] == pytest.approx(
        skm.accuracy_score(ref, pred), abs=TOL
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_binary_and_macro_match_sklearn(seed):
    pred, ref = _labels(seed)
    assert compute("f1", pred, ref)["f1"] == pytest.approx(skm.f1_score(ref, pred), abs=TOL)
    pred, ref = _labels(seed, classes=4)
    got = compute("f1", pred.tolist(), ref.tolist(), average="macro", bootstrap_iters=0)["f1"]
    assert got == pytest.approx(skm.f1_score(ref, pred, average="macro"), abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", [2, 3])
def test_matthews_matches_sklearn(seed, classes):
    pred, ref = _labels(seed, classes=classes)
    got = compute("matthews", pred, ref)["matthews_correlation"]
    assert got == pytest.approx(skm.matthews_corrcoef(ref, pred), abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_pearson_spearman_match_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 5, 150)
    pred = ref + rng.normal(0, 1.5, 150)
    if ties:  # STS-B-like scores on a coarse grid: many tied ranks on both sides
        ref, pred = np.round(ref), np.round(pred * 2) / 2
    for metric in ("pearson", "spearman"):  # both names return both keys
        got = compute(metric, pred, ref)
        assert got["pearson"] == pytest.approx(stats.pearsonr(pred, ref).statistic, abs=TOL)
        assert got["spearmanr"] == pytest.approx(stats.spearmanr(pred, ref).statistic, abs=TOL)


def test_results_are_plain_floats_with_standard_errors():
    for metric, (pred, ref) in {
        "accuracy": ([1, 0, 1], [1, 1, 1]),
        "pearson": ([0.1, 0.5, 0.2, 0.9], [0.0, 1.0, 0.5, 0.7]),
        "rouge_l": (["a b", "c"], ["a c", "c"]),
    }.items():
        result = compute(metric, pred, ref, bootstrap_iters=50)
        assert all(type(v) is float for v in result.values())
        assert {key + "_stderr" for key in result if not key.endswith("_stderr")} == {
            key for key in result if key.endswith("_stderr")
        }


# --- standard errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "exact_match", "rouge_l"])
def test_means_get_the_analytic_standard_error(metric):
    rng = np.random.default_rng(3)
    if metric == "accuracy":
        pred, ref = _labels(3, n=300)
        per_example = (pred == ref).astype(float)
    else:
        words = ["cat", "cats", "sat", "the", "mat"]
        pred = [" ".join(rng.choice(words, 3)) for _ in range(300)]
        ref = [" ".join(rng.choice(words, 3)) for _ in range(300)]
        if metric == "exact_match":
            per_example = np.array([p == r for p, r in zip(pred, ref, strict=True)], float)
        else:
            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            per_example = np.array(
                [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(pred, ref, strict=True)]
            )
    result = compute(metric, pred, ref)
    key = METRICS[metric].key
    # The harness's mean_stderr: sample standard deviation (n - 1) over sqrt(n).
    expected = np.std(per_example, ddof=1) / np.sqrt(len(per_example))
    assert result[key] == pytest.approx(per_example.mean(), abs=TOL)
    assert result[key + "_stderr"] == pytest.approx(expected, abs=TOL)


@pytest.mark.filterwarnings("ignore:A single label")
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("classes", [2, 3])
def test_vectorised_bootstrap_statistics_match_sklearn_and_scipy(seed, classes):
    """On each of a batch of resamples, the statistics the bootstrap uses equal the libraries'."""
    rng = np.random.default_rng(seed)
    pred, ref = _labels(seed, n=60, classes=classes)
    x = rng.normal(size=60)
    y = np.round(x + rng.normal(size=60))  # ties on one side
    rows = rng.integers(0, 60, (8, 60))
    np.testing.assert_allclose(
        stderr.matthews(pred[rows], ref[rows]),
        [skm.matthews_corrcoef(ref[r], pred[r]) for r in rows],
        atol=TOL,
    )
    np.testing.assert_allclose(
        stderr.binary_f1(1)(pred[rows] == 1, ref[rows] == 1),
        [skm.f1_score(ref[r] == 1, pred[r] == 1, zero_division=0.0) for r in rows],
        atol=TOL,
    )
    np.testing.assert_allclose(
        stderr.pearson(x[rows], y[rows]), [stats.pearsonr(x[r], y[r])[0] for r in rows], atol=TOL
    )
    np.testing.assert_allclose(
        stderr.spearman(x[rows], y[rows]),
        [stats.spearmanr(x[r], y[r])[0] for r in rows],
        atol=TOL,
    )
    # Degenerate resamples: one class only gives MCC 0 and F1 0, as scikit-learn does.
    constant = np.zeros((1, 10), dtype=int)
    assert stderr.matthews(constant, constant)[0] == skm.matthews_corrcoef([0] * 10, [0] * 10)
    assert stderr.binary_f1(1)(constant, constant)[0] == 0.0


def test_bootstrap_standard_error_is_the_spread_over_resamples():
    """Against an independent paired bootstrap (numpy indices, scikit-learn per resample): the
    two estimates of the same quantity agree to the Monte-Carlo error of 1,000 resamples."""
    pred, ref = _labels(11, n=400)
    pred[:250] = ref[:250]  # a model better than chance
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 400, (1000, 400))
    independent = np.std([skm.matthews_corrcoef(ref[r], pred[r]) for r in rows], ddof=1)
    got = compute("matthews", pred, ref, bootstrap_iters=1000, seed=1)
    assert got["matthews_correlation_stderr"] == pytest.approx(independent, rel=0.1)
    # Seeded: the same seed gives the same value, another seed a slightly different one.
    again = compute("matthews", pred, ref, bootstrap_iters=1000, seed=1)
    assert again == got
    other = compute("matthews", pred, ref, bootstrap_iters=1000, seed=2)
    assert other["matthews_correlation_stderr"] != got["matthews_correlation_stderr"]
    assert compute("f1", pred, ref, bootstrap_iters=0)["f1_stderr"] is None


# --- text metrics ------------------------------------------------------------------------------


def test_exact_match_strips_and_optionally_ignores_case():
    pred = ["Paris", " Paris\n", "paris", "New  York", "Rome."]
    ref = ["Paris", "Paris", "Paris", "New York", "Rome"]
    # Case-sensitive: "Paris" and " Paris\n" (stripped) match; lowercase, inner spaces and "." don't.
    assert compute("exact_match", pred, ref)["exact_match"] == 2 / 5
    # Ignoring case "paris" matches too.
    assert compute("exact_match", pred, ref, ignore_case=True)["exact_match"] == 3 / 5


def test_rouge_l_follows_rouge_score_tokenisation_and_stemming():
    # rouge_score lowercases and drops punctuation: these are the same token sequences.
    assert compute("rouge_l", ["Yes."], ["yes"])["rougeL"] == 1.0
    assert compute("rouge_l", ["the cat, sat"], ["the cat sat"])["rougeL"] == 1.0
    # Porter stemming (tokens longer than 3 characters): "jumping" ~ "jumps".
    assert compute("rouge_l", ["dogs jumping"], ["dog jumps"])["rougeL"] == 1.0
    assert compute("rouge_l", ["dogs jumping"], ["dog jumps"], use_stemmer=False)["rougeL"] == 0.0
    # pred = the cat sat on the mat, ref = the cat is on the mat: LCS 5 of 6 and 6, F = 5/6.
    assert compute("rouge_l", ["the cat sat on the mat"], ["the cat is on the mat"])[
        "rougeL"
    ] == pytest.approx(5 / 6, abs=TOL)
    assert compute("rouge_l", [""], ["anything"])["rougeL"] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_rouge_l_equals_rouge_score(seed):
    rng = np.random.default_rng(seed)
    vocab = ["a", "B", "cats", "Running", "ran,", "the.", "Über", "x-y", "42", "runs"]
    sentence = lambda: " ".join(rng.choice(vocab, rng.integers(0, 15)))  # noqa: E731
    preds, refs = [sentence() for _ in range(40)], [sentence() for _ in range(40)]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)]
    assert compute("rouge_l", preds, refs)["rougeL"] == pytest.approx(np.mean(expected), abs=TOL)


# --- GLUE --------------------------------------------------------------------------------------


def test_glue_task_scores():
    assert glue_task_score("cola", {"matthews_correlation": 0.6}) == pytest.approx(0.6)
    assert glue_task_score("mrpc", {"accuracy": 0.8, "f1": 0.9}) == pytest.approx(0.85)
    assert glue_task_score("stsb", {"pearson": 0.88, "spearmanr": 0.86}) == pytest.approx(0.87)
    # Results keyed by recipe metric name are accepted too.
    assert glue_task_score("stsb", {"pearson": 0.88, "spearman": 0.86}) == pytest.approx(0.87)
    assert set(GLUE_TASK_METRICS) == {
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli_matched",
        "mnli_mismatched",
        "qnli",
        "rte",
        "wnli",
    }


def test_glue_average_counts_mnli_once():
    per_task = {
        "cola": {"matthews_correlation": 0.5},
        "mrpc": {"accuracy": 0.8, "f1": 0.9},  # task score 0.85
        "mnli_matched": {"accuracy": 0.8},
        "mnli_mismatched": {"accuracy": 0.7},  # MNLI score (0.8 + 0.7) / 2 = 0.75
    }
    # (0.5 + 0.85 + 0.75) / 3 = 2.1 / 3 = 0.7; counting m and mm apart would give 2.85 / 4 = 0.7125.
    assert glue_average(per_task) == pytest.approx(0.7, abs=TOL)


def test_glue_average_reproduces_bert_large_leaderboard_score():
    # BERT-large on the GLUE test server (leaderboard score 80.5), as fractions:
    per_task = {
        "cola": {"matthews_correlation": 0.605},  # 60.5
        "sst2": {"accuracy": 0.949},  # 94.9
        "mrpc": {"f1": 0.893, "accuracy": 0.854},  # 87.35
        "stsb": {"pearson": 0.876, "spearmanr": 0.865},  # 87.05
        "qqp": {"f1": 0.721, "accuracy": 0.893},  # 80.70
        "mnli_matched": {"accuracy": 0.867},
        "mnli_mismatched": {"accuracy": 0.859},  # MNLI (86.7 + 85.9) / 2 = 86.30
        "qnli": {"accuracy": 0.927},  # 92.7
        "rte": {"accuracy": 0.701},  # 70.1
        "wnli": {"accuracy": 0.651},  # 65.1
    }
    # 60.5 + 94.9 + 87.35 + 87.05 + 80.70 + 86.30 + 92.7 + 70.1 + 65.1 = 724.70 over 9 tasks.
    score = glue_average(per_task)
    assert score == pytest.approx(7.247 / 9, abs=TOL)
    assert round(score * 100, 1) == 80.5


def test_glue_errors():
    with pytest.raises(UserInputError, match="unknown GLUE task 'ax'; known: cola"):
        glue_task_score("ax", {"accuracy": 0.5})
    with pytest.raises(UserInputError, match="GLUE task 'mrpc': results have no 'f1' score"):
        glue_task_score("mrpc", {"accuracy": 0.5})
    with pytest.raises(UserInputError, match="no tasks"):
        glue_average({})


# --- API behaviour -----------------------------------------------------------------------------


def test_primary_score_reads_each_metric():
    results = {
        "accuracy": 0.1,
        "f1": 0.2,
        "matthews_correlation": 0.3,
        "pearson": 0.4,
        "spearmanr": 0.5,
        "exact_match": 0.6,
        "rougeL": 0.7,
    }
    expected = {
        "accuracy": 0.1,
        "f1": 0.2,
        "matthews": 0.3,
        "pearson": 0.4,
        "spearman": 0.5,
        "exact_match": 0.6,
        "rouge_l": 0.7,
    }
    assert {m: primary_score(m, results) for m in METRICS} == expected
    assert all(spec.greater_is_better for spec in METRICS.values())
    with pytest.raises(UserInputError, match="results have no 'f1' score"):
        primary_score("f1", {"accuracy": 0.5})


def test_unknown_metric_lists_known_ones():
    with pytest.raises(
        UserInputError, match="unknown metric 'bleu'; known: accuracy, f1, matthews"
    ):
        compute("bleu", [1], [1])
    with pytest.raises(UserInputError, match="unknown metric"):
        primary_score("rouge", {})


def test_length_mismatch_and_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute("accuracy", [0, 1], [0])
    with pytest.raises(UserInputError, match="no examples"):
        compute("accuracy", [], [])


def test_modules_load_offline_through_evaluate_and_are_cached():
    import evaluate

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for spec in METRICS.values():
        assert spec.path.is_absolute() and spec.path.is_file()
        module = metrics.load_module(spec.module)
        assert isinstance(module, evaluate.Metric)
        # Loaded by evaluate.load (copied into its dynamic-modules package), not the fallback.
        assert type(module).__module__.startswith("evaluate_modules.metrics.")
        # The module's own Metric class, not a helper of the shared metric_info module.
        assert type(module).__name__ == "".join(p.title() for p in spec.module.split("_"))
        assert module.info.features["predictions"] == module.info.features["references"]
        assert (
            module.info.description.strip()
            and module.info.citation.strip()
            and module.info.features
        )
        assert metrics.load_module(spec.module) is module


def test_same_named_folder_in_cwd_does_not_shadow(tmp_path, monkeypatch):
    # A wrong metric in ./smora_accuracy/smora_accuracy.py must not be picked up.
    fake = tmp_path / "smora_accuracy"
    fake.mkdir()
    (fake / "smora_accuracy.py").write_text("raise RuntimeError('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metrics, "_LOADED", {})
    assert compute("accuracy", [1, 0], [1, 1]) == {"accuracy": 0.5, "accuracy_stderr": 0.5}


def test_unwritable_hf_cache_falls_back_to_direct_import(tmp_path, monkeypatch):
    import evaluate

    # A path below a regular file can never be created: makedirs raises NotADirectoryError.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", blocker / "modules")
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", blocker / "metrics")
    monkeypatch.setattr(sys, "path", list(sys.path))  # evaluate appends the cache dir to sys.path
    monkeypatch.setattr(metrics, "_LOADED", {})
    assert compute("rouge_l", ["the cat sat"], ["the cat was sat"])["rougeL"] == pytest.approx(
        6 / 7
    )
    assert type(metrics.load_module("smora_rouge")).__module__ == "_smora_metric_smora_rouge"
