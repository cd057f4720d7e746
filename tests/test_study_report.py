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


def test_router_summary_reads_the_worst_layer_at_the_end(study):
    def curve(*entropies):
        return [{"min_entropy": e} for e in entropies]

    balanced = {"0": curve(0.9, 0.70), "1e-05": curve(0.9, 0.80)}
    assert study.router_summary(balanced)[2].startswith("reproduced at the default rate")
    larger = {"0": curve(0.75), "1e-05": curve(0.74), "0.01": curve(0.99)}
    assert "the default does nothing" in study.router_summary(larger)[2]
    assert study.router_summary({"0": curve(0.8), "1e-05": curve(0.8)})[2].startswith("no effect")
