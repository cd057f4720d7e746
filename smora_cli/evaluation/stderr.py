"""Standard errors of metrics, following lm-evaluation-harness.

Metrics that are means of per-example scores (accuracy, exact match, ROUGE-L) get the analytic
standard error of a mean, s / sqrt(n) with the n - 1 sample deviation (the harness's
`mean_stderr`). Metrics that are not means (F1, Matthews, Pearson, Spearman) get a paired
bootstrap: the standard deviation, over `iters` resamples of the (prediction, reference) pairs
drawn with replacement from a seeded generator, of the metric recomputed on each resample
(`scipy.stats.bootstrap`; the harness bootstraps the same metrics). The statistics below are
vectorised over resamples and equal scikit-learn's / SciPy's on each one (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

DEFAULT_BOOTSTRAP_ITERS = 1000
_MAX_BATCH_ELEMENTS = 4_000_000  # resamples x examples held at once by one statistic call


def mean_stderr(values) -> float | None:
    """Standard error of the mean of per-example scores; None below two examples."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def bootstrap_stderr(
    statistic: Callable, predictions, references, *, iters: int, seed: int
) -> float | None:
    """Paired-bootstrap standard error of `statistic(predictions, references, axis=-1)`.

    Args:
        statistic: vectorised over the leading axes (see `pearson`, `matthews`, ...).
        iters: resamples; below 2, no standard error (None).
        seed: seed of the resampling generator.

    Returns:
        The standard deviation of the statistic over the resamples where it is defined (a
        correlation is not where a resample is constant), or None when fewer than two are,
        or with fewer than two examples or resamples.
    """
    from scipy import stats  # deferred: SciPy's statistics take a second to import

    predictions, references = np.asarray(predictions), np.asarray(references)
    if iters < 2 or len(predictions) < 2:
        return None
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # A resample with a constant side has no correlation: NaN, reported by SciPy as a
        # warning per resample.
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (predictions, references),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=iters,
            batch=max(1, _MAX_BATCH_ELEMENTS // len(predictions)),
            method="percentile",  # no BCa jackknife: only the standard error is kept
            rng=np.random.default_rng(seed),
        )
    defined = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    return float(defined.std(ddof=1)) if len(defined) >= 2 else None


# Vectorised statistics: arrays [..., n], one value per leading index.
def pearson(x, y, axis: int = -1):
    """Pearson's r along `axis` (NaN where a side is constant)."""
    x = x - x.mean(axis, keepdims=True)
    y = y - y.mean(axis, keepdims=True)
    return (x * y).sum(axis) / np.sqrt((x * x).sum(axis) * (y * y).sum(axis))


def spearman(x, y, axis: int = -1):
    """Spearman's rho: Pearson's r of the ranks, ties given their average rank (as SciPy)."""
    from scipy import stats

    return pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def matthews(predictions, references, axis: int = -1):
    """Matthews correlation from the confusion counts, multi-class as scikit-learn (Gorodkin
    2004); 0 where the denominator is 0."""
    confusion = _confusions(references, predictions, axis)  # [..., true, predicted]
    true_sum, pred_sum = confusion.sum(-1), confusion.sum(-2)
    correct = np.trace(confusion, axis1=-2, axis2=-1)
    total = confusion.sum((-2, -1))
    cov_tp = correct * total - (true_sum * pred_sum).sum(-1)
    cov_pp = total**2 - (pred_sum**2).sum(-1)
    cov_tt = total**2 - (true_sum**2).sum(-1)
    denominator = np.sqrt(cov_tt * cov_pp)
    return np.where(denominator > 0, cov_tp / np.where(denominator > 0, denominator, 1), 0.0)


def binary_f1(pos_label: int = 1) -> Callable:
    """F1 of class `pos_label`: 2 TP / (2 TP + FP + FN), 0 where that is 0/0 (as scikit-learn
    with zero_division=0)."""

    def f1(predictions, references, axis: int = -1):
        predicted, actual = predictions == pos_label, references == pos_label
        tp = (predicted & actual).sum(axis)
        wrong = (predicted != actual).sum(axis)
        denominator = 2 * tp + wrong
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)

    return f1


def _confusions(references, predictions, axis: int):
    """[..., K, K] confusion counts of integer labels along `axis`."""
    references = np.moveaxis(np.asarray(references), axis, -1)
    predictions = np.moveaxis(np.asarray(predictions), axis, -1)
    classes = np.union1d(references, predictions)
    k = len(classes)
    cells = np.searchsorted(classes, references) * k + np.searchsorted(classes, predictions)
    rows = int(np.prod(cells.shape[:-1]))
    offsets = (np.arange(rows) * k * k).reshape(cells.shape[:-1] + (1,))
    counts = np.bincount((cells + offsets).ravel(), minlength=rows * k * k)
    return counts.reshape(cells.shape[:-1] + (k, k)).astype(float)
