"""ROUGE-L F-measure by the `rouge_score` package (longest common subsequence of tokens).

A local `evaluate` metric module: load it with `evaluate.load(<absolute path to this file>)`.
"""

from __future__ import annotations

import evaluate
import numpy as np
from rouge_score import rouge_scorer

from smora_cli.evaluation.metric_info import pair_info
from smora_cli.evaluation.stderr import mean_stderr

_DESCRIPTION = """
ROUGE-L (Lin 2004) for one prediction against one reference, averaged over examples, computed
by Google's `rouge_score` package (the implementation papers report): its tokeniser lowercases,
replaces every character other than a-z and 0-9 by a space and splits on whitespace, and with
`use_stemmer=True` (the default here, as in T5 and Super-NaturalInstructions evaluations)
applies the Porter stemmer to tokens longer than three characters. The score is the
LCS-based F-measure (beta = 1); an empty side scores 0.0. `rougeL_stderr` is the standard
error of the mean of the per-example scores.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated strings.
    references (`list` of `str`): reference strings, same length as `predictions`.
    use_stemmer (`bool`, default True): Porter-stem tokens as `rouge_score` does.

Returns:
    rougeL (`float`): mean per-example ROUGE-L F-measure, in [0, 1].
    rougeL_stderr (`float` or None): its standard error.

Example:
    >>> metric.compute(predictions=["the cat sat"], references=["the cat was sat"])
    {'rougeL': 0.8571428571428571, 'rougeL_stderr': None}
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmoraRouge(evaluate.Metric):
    """Mean ROUGE-L F-measure by `rouge_score`."""

    def _info(self) -> evaluate.MetricInfo:
        urls = [
            "https://aclanthology.org/W04-1013/",
            "https://github.com/google-research/google-research/tree/master/rouge",
        ]
        return pair_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, "string", urls)

    def _compute(
        self, predictions, references, use_stemmer: bool = True
    ) -> dict[str, float | None]:
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        scores = [
            scorer.score(reference, prediction)["rougeL"].fmeasure
            for prediction, reference in zip(predictions, references, strict=False)
        ]
        return {"rougeL": float(np.mean(scores)), "rougeL_stderr": mean_stderr(scores)}
