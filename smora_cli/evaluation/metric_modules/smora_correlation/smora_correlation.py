"""Pearson and Spearman correlation of float predictions with float references (regression).

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import evaluate
from scipy.stats import pearsonr, spearmanr

from smora_cli.evaluation.metric_info import pair_info
from smora_cli.evaluation.stderr import (
    DEFAULT_BOOTSTRAP_ITERS,
    bootstrap_stderr,
    pearson,
    spearman,
)

_DESCRIPTION = """
Pearson's r (linear correlation) and Spearman's rho (Pearson's r of the ranks, ties given their
average rank) between predicted and reference scores, both computed by scipy.stats, as GLUE
reports them for STS-B. Both are NaN when either side is constant (the correlation is
undefined); scipy then warns with `ConstantInputWarning`. `pearson_stderr` and
`spearmanr_stderr` are paired-bootstrap standard errors (`bootstrap_iters` seeded resamples).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores.
    references (`list` of `float`): reference scores, same length as `predictions` (at least 2).
    bootstrap_iters (`int`, default 1000): resamples of the standard errors (0: none).
    seed (`int`, default 0): seed of the resampling.

Returns:
    pearson (`float`): Pearson's r, in [-1, 1].
    pearson_stderr (`float` or None): its bootstrap standard error.
    spearmanr (`float`): Spearman's rho, in [-1, 1].
    spearmanr_stderr (`float` or None): its bootstrap standard error.

Example:
    >>> metric.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 4.0], bootstrap_iters=0)
    {'pearson': 0.9819805060619655, 'pearson_stderr': None, 'spearmanr': 1.0, 'spearmanr_stderr': None}
"""

_CITATION = """
@article{2020SciPy-NMeth,
  author={Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  title={{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal={Nature Methods},
  volume={17},
  pages={261--272},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraCorrelation(evaluate.Metric):
    """Pearson and Spearman correlation."""

    def _info(self) -> evaluate.MetricInfo:
        urls = ["https://docs.scipy.org/doc/scipy/reference/stats.html"]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "float64", urls)

    def _compute(
        self,
        predictions,
        references,
        bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
        seed: int = 0,
    ) -> dict[str, float | None]:
        def stderr(statistic):
            return bootstrap_stderr(
                statistic, predictions, references, iters=bootstrap_iters, seed=seed
            )

        return {
            "pearson": float(pearsonr(predictions, references).statistic),
            "pearson_stderr": stderr(pearson),
            "spearmanr": float(spearmanr(predictions, references).statistic),
            "spearmanr_stderr": stderr(spearman),
        }
