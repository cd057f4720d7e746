"""The kinds of model smora adapts, named once for recipes, `smora eval --kind` and the code.

A `ModelKind` equals its name as a string (`ModelKind.CLASSIFIER == "classifier"`), so a kind
read from YAML or JSON compares with the members directly.
"""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    CLASSIFIER = "classifier"  # an encoder with smora's task heads (one per task)
    CAUSAL_LM = "causal-lm"  # a decoder that generates or ranks answer strings
    SEQ2SEQ = "seq2seq"  # an encoder-decoder that generates answer strings


KINDS = tuple(kind.value for kind in ModelKind)
