"""F1: harmonic mean of precision and recall, computed by scikit-learn's `f1_score`.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import evaluate
import numpy as np
from sklearn.metrics import f1_score

from smora_cli.evaluation.metric_info import SKLEARN_CITATION, pair_info
from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS, binary_f1, bootstrap_stderr

_DESCRIPTION = """
F1 = 2 * precision * recall / (precision + recall).
By default this is the binary F1 of the positive class `pos_label=1` (as GLUE reports it for
MRPC and QQP). For more than two classes pass `average` ("macro", "micro" or "weighted"),
which is handed to scikit-learn's `f1_score` unchanged. When precision + recall is 0 the score
is 0.0 (scikit-learn's `zero_division=0.0`, set explicitly so no warning is raised).
`f1_stderr` is a paired-bootstrap standard error (`bootstrap_iters` seeded resamples).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids, same length as `predictions`.
    average (`str`, default "binary"): scikit-learn's `average` ("binary", "macro", "micro",
        "weighted").
    pos_label (`int`, default 1): the positive class when `average="binary"`.
    bootstrap_iters (`int`, default 1000): resamples of the standard error (0: none).
    seed (`int`, default 0): seed of the resampling.

Returns:
    f1 (`float`): in [0, 1].
    f1_stderr (`float` or None): its bootstrap standard error.

Example:
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1], bootstrap_iters=0)
    {'f1': 0.5, 'f1_stderr': None}
"""

_CITATION = SKLEARN_CITATION


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraF1(evaluate.Metric):
    """Binary (or averaged multi-class) F1."""

    def _info(self) -> evaluate.MetricInfo:
        urls = ["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "int64", urls)

    def _compute(
        self,
        predictions,
        references,
        average: str = "binary",
        pos_label: int = 1,
        bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
        seed: int = 0,
    ) -> dict[str, float | None]:
        def score(pred, ref):
            return f1_score(ref, pred, average=average, pos_label=pos_label, zero_division=0.0)

        def per_resample(pred, ref, axis=-1):  # averaged F1 has no vectorised form here
            rows = zip(
                pred.reshape(-1, pred.shape[-1]), ref.reshape(-1, ref.shape[-1]), strict=True
            )
            return np.array([score(p, r) for p, r in rows]).reshape(pred.shape[:-1])

        statistic = binary_f1(pos_label) if average == "binary" else per_resample
        return {
            "f1": float(score(predictions, references)),
            "f1_stderr": bootstrap_stderr(
                statistic, predictions, references, iters=bootstrap_iters, seed=seed
            ),
        }
