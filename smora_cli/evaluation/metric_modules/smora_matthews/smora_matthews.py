"""Matthews correlation coefficient (MCC), computed by scikit-learn's `matthews_corrcoef`.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import evaluate
from sklearn.metrics import matthews_corrcoef

from smora_cli.evaluation.metric_info import pair_info
from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS, bootstrap_stderr, matthews

_DESCRIPTION = """
The Matthews correlation coefficient between predicted and reference class ids, in [-1, 1]:
for two classes (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); for more classes the
multi-class generalisation (Gorodkin 2004) that scikit-learn implements. It is 0.0 when the
denominator is 0 (for example, every prediction is the same class). GLUE reports it for CoLA,
computed with the same scikit-learn function. `matthews_correlation_stderr` is a
paired-bootstrap standard error (`bootstrap_iters` seeded resamples).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids, same length as `predictions`.
    bootstrap_iters (`int`, default 1000): resamples of the standard error (0: none).
    seed (`int`, default 0): seed of the resampling.

Returns:
    matthews_correlation (`float`): in [-1, 1].
    matthews_correlation_stderr (`float` or None): its bootstrap standard error.

Example:
    >>> metric.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0], bootstrap_iters=0)
    {'matthews_correlation': 0.5773502691896258, 'matthews_correlation_stderr': None}
"""

_CITATION = """
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of {T4} phage lysozyme},
  author={Matthews, Brian W.},
  journal={Biochimica et Biophysica Acta (BBA) - Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraMatthews(evaluate.Metric):
    """Matthews correlation coefficient."""

    def _info(self) -> evaluate.MetricInfo:
        urls = ["https://en.wikipedia.org/wiki/Phi_coefficient"]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "int64", urls)

    def _compute(
        self,
        predictions,
        references,
        bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
        seed: int = 0,
    ) -> dict[str, float | None]:
        return {
            "matthews_correlation": float(matthews_corrcoef(references, predictions)),
            "matthews_correlation_stderr": bootstrap_stderr(
                matthews, predictions, references, iters=bootstrap_iters, seed=seed
            ),
        }
