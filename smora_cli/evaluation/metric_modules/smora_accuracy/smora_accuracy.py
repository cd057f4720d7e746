"""Accuracy: the fraction of predictions equal to their reference label.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`,
which works offline (no hub lookup for a local path).
"""

from __future__ import annotations

import evaluate
import numpy as np

from smora_cli.evaluation.metric_info import SKLEARN_CITATION, pair_info
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

_CITATION = SKLEARN_CITATION


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraAccuracy(evaluate.Metric):
    """Fraction of exact label matches."""

    def _info(self) -> evaluate.MetricInfo:
        urls = ["https://en.wikipedia.org/wiki/Accuracy_and_precision"]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "int64", urls)

    def _compute(self, predictions, references) -> dict[str, float | None]:
        matches = np.asarray(predictions) == np.asarray(references)
        return {"accuracy": float(matches.mean()), "accuracy_stderr": mean_stderr(matches)}
