"""What the `evaluate` metric modules under metric_modules/ share.

Each module keeps what `evaluate` reads in the module file itself: its texts and its one
`evaluate.Metric` subclass with `_info` and `_compute`. Only helpers live here, never a Metric
class: `evaluate.load` takes the first Metric class it finds in the module's namespace.
"""

from __future__ import annotations

import datasets
import evaluate

SKLEARN_CITATION = """
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


def pair_info(
    description: str, inputs: str, citation: str, value_type: str, urls: list[str]
) -> evaluate.MetricInfo:
    """The `MetricInfo` of a metric over (prediction, reference) pairs whose values are of one
    `datasets` type ("int64", "float64" or "string")."""
    value = datasets.Value(value_type)
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs,
        features=datasets.Features({"predictions": value, "references": value}),
        reference_urls=urls,
    )
