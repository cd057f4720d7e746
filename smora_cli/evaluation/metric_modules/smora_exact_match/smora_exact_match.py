"""Exact match: the fraction of predicted strings equal to their reference after normalisation.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import evaluate
import numpy as np

from smora_cli.evaluation.metric_info import pair_info
from smora_cli.evaluation.stderr import mean_stderr

_DESCRIPTION = """
Exact match is the proportion of predictions that equal their reference string after
normalisation. Normalisation always strips leading and trailing whitespace (generated text
often ends in a newline or a space); with `ignore_case=True` both strings are also lowercased
with `str.lower()`. Nothing else is changed: inner whitespace, punctuation and articles count.
`exact_match_stderr` is the standard error of the mean of the per-example 0/1 matches.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated strings.
    references (`list` of `str`): reference strings, same length as `predictions`.
    ignore_case (`bool`, default False): lowercase both sides before comparing.

Returns:
    exact_match (`float`): in [0, 1].
    exact_match_stderr (`float` or None): its standard error.

Example:
    >>> metric.compute(predictions=[" Paris\\n", "paris"], references=["Paris", "Paris"])
    {'exact_match': 0.5, 'exact_match_stderr': 0.5}
"""

_CITATION = """
@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP},
  pages={2383--2392},
  year={2016}
}
"""


def normalize(text: str, ignore_case: bool) -> str:
    """Strip surrounding whitespace and, if asked, lowercase."""
    text = text.strip()
    return text.lower() if ignore_case else text


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraExactMatch(evaluate.Metric):
    """Fraction of normalised string matches."""

    def _info(self) -> evaluate.MetricInfo:
        urls = ["https://rajpurkar.github.io/SQuAD-explorer/"]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "string", urls)

    def _compute(
        self, predictions, references, ignore_case: bool = False
    ) -> dict[str, float | None]:
        matches = [
            normalize(p, ignore_case) == normalize(r, ignore_case)
            for p, r in zip(predictions, references, strict=False)
        ]
        return {"exact_match": float(np.mean(matches)), "exact_match_stderr": mean_stderr(matches)}
