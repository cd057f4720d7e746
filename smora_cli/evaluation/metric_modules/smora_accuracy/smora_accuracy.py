"""Accuracy: the fraction of predictions equal to their reference label.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`,
which works offline (no hub lookup for a local path).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from smora_cli.evaluation.stderr import mean_stderr

_DESCRIPTION = """
Accuracy is the proportion of correct predictions among all examples:
accuracy = (number of predictions equal to the reference) / (number of examples).
Labels are integer class ids. `accuracy_stderr` is the standard error of that mean,
s / sqrt(n) with the n - 1 sample deviation of the per-example 0/1 matches (None below two
examples), as lm-evaluation-harness reports it.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids, same length as `predictions`.

Returns:
    accuracy (`float`): in [0, 1].
    accuracy_stderr (`float` or None): its standard error.

Example:
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75, 'accuracy_stderr': 0.25}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and
          Grisel, O. and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and
          Vanderplas, J. and Passos, A. and Cournapeau, D. and Brucher, M. and Perrot, M. and
          Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraAccuracy(evaluate.Metric):
    """Fraction of exact label matches."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Accuracy_and_precision"],
        )

    def _compute(self, predictions, references) -> dict[str, float | None]:
        matches = np.asarray(predictions) == np.asarray(references)
        return {"accuracy": float(matches.mean()), "accuracy_stderr": mean_stderr(matches)}
