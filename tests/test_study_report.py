"""The evidence study's verdicts (scripts/study.py): signs, noise and the summary rows."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_difference_and_welch_standard_error(study):
    a, b = [0.70, 0.72, 0.74], [0.60, 0.61, 0.65]
    finding = study.compare("claim", "a minus b", a, b, +1)
    assert finding.diff == pytest.approx(0.72 - 0.62)
    # sample variances 0.0004 and (0.02² + 0.01² + 0.03²) / 2 = 0.0007, three seeds each
    assert finding.se == pytest.approx(math.sqrt(0.0004 / 3 + 0.0007 / 3))
    assert finding.seeds == 3
    assert finding.verdict == "reproduced"


@pytest.mark.parametrize(
    "a,b,expected,verdict",
    [
        ([0.5, 0.6, 0.7], [0.55, 0.6, 0.65], +1, "not resolved"),  # inside two standard errors
        ([0.10, 0.11, 0.12], [0.20, 0.21, 0.22], +1, "opposite here"),
        ([0.10, 0.11, 0.12], [0.20, 0.21, 0.22], -1, "reproduced"),  # a drop: lower is better
        ([0.9], [0.1], +1, "one seed: not tested"),
        ([], [0.1, 0.2], +1, "not measured"),
    ],
)
def test_verdicts(study, a, b, expected, verdict):
    assert study.compare("c", "x", a, b, expected).verdict.startswith(verdict)


def test_fold_summary_needs_exact_scores_and_base_speed(study):
    folded = {"t": {"routed": 0.5, "folded": 0.5 + 1e-9}}
    fast = {"cases": {"base encoder": {"ratio": 1.0}, "MoRE folded (t)": {"ratio": 1.01}}}
    slow = {"cases": {"MoRE folded (t)": {"ratio": 1.2}}}
    assert study.fold_summary(folded, fast)[2] == "reproduced"
    assert study.fold_summary(folded, slow)[2] == "not reproduced"
    off = {"t": {"routed": 0.5, "folded": 0.6}}
    assert study.fold_summary(off, fast)[2] == "not reproduced"


def point(step, mean, worst, load):
    return {"step": step, "mean_entropy": mean, "min_entropy": worst, "max_load": load}


def test_router_curves_average_the_seeds_at_steps_all_of_them_logged(study):
    runs = {
        "0": {
            1: {"points": [point(5, 0.9, 0.8, 0.1), point(10, 0.8, 0.7, 0.2)], "average": 0.5},
            2: {"points": [point(5, 0.7, 0.6, 0.3)], "average": 0.6},
        }
    }
    (only,) = study.router_curves(runs)["0"]
    assert only["step"] == 5
    assert only["mean_entropy"] == pytest.approx(0.8)
    assert only["mean_entropy_std"] == pytest.approx(math.sqrt(0.02))  # stdev of 0.9, 0.7
    assert only["max_load"] == pytest.approx(0.2)


def test_router_claims_compare_the_last_worst_layer_entropy_with_no_bias(study):
    def seeds(*worst):
        return {
            s: {"points": [point(100, 0.9, w, 0.1)], "average": 0.6} for s, w in enumerate(worst)
        }

    runs = {
        "0": seeds(0.70, 0.72, 0.74),
        "1e-05": seeds(0.71, 0.73, 0.72),
        "0.01": seeds(0.95, 0.96, 0.97),
    }
    default, large = study.router_claims(runs)
    assert default.comparison == "u=1e-05 minus u=0"
    assert default.verdict.startswith("not resolved")
    assert large.diff == pytest.approx(0.24)
    assert large.verdict == "reproduced"
    assert study.router_claims({"0.01": runs["0.01"]}) == []  # nothing to compare with
