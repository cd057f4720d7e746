"""F1: harmonic mean of precision and recall, computed by scikit-learn's `f1_score`.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """
F1 = 2 * precision * recall / (precision + recall).
By default this is the binary F1 of the positive class `pos_label=1` (as GLUE reports it for
MRPC and QQP). For more than two classes pass `average` ("macro", "micro" or "weighted"),
which is handed to scikit-learn's `f1_score` unchanged. When precision + recall is 0 the score
is 0.0 (scikit-learn's `zero_division=0.0`, set explicitly so no warning is raised).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids, same length as `predictions`.
    average (`str`, default "binary"): scikit-learn's `average` ("binary", "macro", "micro",
        "weighted").
    pos_label (`int`, default 1): the positive class when `average="binary"`.

Returns:
    f1 (`float`): in [0, 1].

Example:
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'f1': 0.5}
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
class SmoraF1(evaluate.Metric):
    """Binary (or averaged multi-class) F1."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"
            ],
        )

    def _compute(
        self, predictions, references, average: str = "binary", pos_label: int = 1
    ) -> dict[str, float]:
        score = f1_score(
            references, predictions, average=average, pos_label=pos_label, zero_division=0.0
        )
        return {"f1": float(score)}
