"""The study's verdict rule (smora_cli/study/stats.py): differences, Welch errors, verdicts."""

import math

import pytest

from smora_cli.study.stats import compare, fmt, mean_std


def test_difference_and_welch_standard_error():
    a, b = [0.70, 0.72, 0.74], [0.60, 0.61, 0.65]
    finding = compare("claim", "a minus b", a, b, +1)
    assert finding.diff == pytest.approx(0.72 - 0.62)
    # sample variances 0.0004 and (0.02² + 0.01² + 0.03²) / 2 = 0.0007, three seeds each
    assert finding.se == pytest.approx(math.sqrt(0.0004 / 3 + 0.0007 / 3))
    assert finding.seeds == 3
    assert finding.verdict == "reproduced"
    assert finding.difference() == "+0.100 ± 0.019 average score"


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
def test_verdicts(a, b, expected, verdict):
    assert compare("c", "x", a, b, expected).verdict.startswith(verdict)


def test_not_measured_prints_no_numbers():
    finding = compare("c", "x minus y", [], [0.1], +1)
    assert (finding.difference(), finding.verdict) == ("n/a", "not measured")


def test_mean_std_skips_missing_values_and_fmt_shows_one_seed_without_error_bar():
    assert mean_std([0.5, None, float("nan"), 0.7]) == pytest.approx((0.6, math.sqrt(0.02), 2))
    assert mean_std([None]) is None
    assert fmt([0.5, 0.7]) == "0.600 ± 0.141"
    assert fmt([0.25]) == "0.250"
    assert fmt([-0.0001, 0.0001]) == "0.000 ± 0.000"  # never "-0.000"
    assert fmt([]) == "n/a"
