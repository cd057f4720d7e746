"""ROUGE-L F-measure from the longest common subsequence (LCS) of tokens.

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
ROUGE-L (Lin 2004) for one prediction against one reference, averaged over examples.

Tokenisation: the text is lowercased with `str.lower()` and split on runs of whitespace with
`str.split()`. Punctuation stays attached to its word and there is no stemming, so scores can
be lower than those of the `rouge_score` package, which drops non-alphanumeric characters.

With L = length of the longest common subsequence of the two token lists,
precision P = L / len(prediction tokens), recall R = L / len(reference tokens) and
rougeL = F1 = 2PR / (P + R) (beta = 1), or 0.0 when L = 0. An example whose prediction or
reference has no tokens scores 0.0 (as in `rouge_score`). The result is the plain mean of the
per-example scores (no bootstrap aggregation).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated strings.
    references (`list` of `str`): reference strings, same length as `predictions`.

Returns:
    rougeL (`float`): mean per-example ROUGE-L F-measure, in [0, 1].

Example:
    >>> metric.compute(predictions=["the cat sat"], references=["the cat was sat"])
    {'rougeL': 0.8571428571428571}
"""

_CITATION = """
@inproceedings{lin-2004-rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  pages={74--81},
  year={2004},
  publisher={Association for Computational Linguistics}
}
"""


def tokenize(text: str) -> list[str]:
    """Lowercase and split on whitespace."""
    return text.lower().split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of `a` and `b` (O(len(a) * len(b)) time).

    Classic dynamic programme, keeping one row: row[j] is the LCS length of the prefix of `a`
    seen so far and b[:j].
    """
    if len(b) > len(a):
        a, b = b, a  # the row runs over the shorter list: less memory, same answer
    row = [0] * (len(b) + 1)
    for token_a in a:
        diagonal = 0  # value of the previous row at j - 1
        for j, token_b in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if token_a == token_b else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one prediction against one reference."""
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return 0.0
    common = lcs_length(pred, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraRouge(evaluate.Metric):
    """Mean ROUGE-L F-measure over whitespace tokens."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return {
            "rougeL": float(
                np.mean([rouge_l(p, r) for p, r in zip(predictions, references, strict=False)])
            )
        }
