"""Mean ± std over seeds and the study's verdict rule for a paper's claim.

A claim is tested by the difference of two means over seeds and the Welch standard error of
that difference: within two standard errors it is "not resolved"; outside, "reproduced" when
the sign is the one the claim predicts, else "opposite here". One seed tests nothing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    """(mean, sample std, count) of the values that exist, or None."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def fmt(values: list[float | None], digits: int = 3) -> str:
    """`mean ± std` over seeds; one seed prints the value alone (no error bar to show)."""
    stats = mean_std(values)
    if stats is None:
        return "n/a"
    mean, std, n = stats
    text = f"{mean:.{digits}f}".replace(f"-0.{'0' * digits}", f"0.{'0' * digits}")  # no "-0.000"
    return f"{text} ± {std:.{digits}f}" if n > 1 else text


@dataclass(frozen=True)
class Finding:
    """One claim of a paper tested by a difference of means over seeds."""

    claim: str
    comparison: str  # "A minus B"
    diff: float
    se: float  # Welch standard error of the difference
    seeds: int  # seeds of the smaller side
    expected: int  # the sign of `diff` the claim predicts
    unit: str = "average score"

    @property
    def resolved(self) -> bool:
        """The verdict rule: at least two seeds and beyond two standard errors."""
        return self.seeds >= 2 and abs(self.diff) > 2 * self.se

    @property
    def verdict(self) -> str:
        if math.isnan(self.diff):
            return "not measured"
        if self.seeds < 2:
            return "one seed: not tested"
        if not self.resolved:
            return "not resolved"  # within two standard errors: seed noise
        return "reproduced" if self.diff * self.expected > 0 else "opposite here"

    def difference(self) -> str:
        """`+0.100 ± 0.019 average score`: the difference of means and its standard error."""
        if math.isnan(self.diff):
            return "n/a"
        return f"{self.diff:+.3f} ± {self.se:.3f} {self.unit}"


def compare(
    claim: str, comparison: str, a: list[float], b: list[float], expected: int, **kwargs
) -> Finding:
    """Difference of the means of `a` and `b` over seeds, with its standard error."""
    sa, sb = mean_std(a), mean_std(b)
    if sa is None or sb is None:
        return Finding(claim, comparison, math.nan, math.nan, 0, expected, **kwargs)
    se = math.sqrt(sa[1] ** 2 / sa[2] + sb[1] ** 2 / sb[2])
    return Finding(claim, comparison, sa[0] - sb[0], se, min(sa[2], sb[2]), expected, **kwargs)
