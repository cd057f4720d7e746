"""Which model kind (`classifier`, `causal-lm`, `seq2seq`) a model and adapter are, without --kind.

Read, in order, from what was saved with them: task heads beside the adapter or a merged
model (a smora classifier), the adapter's PEFT `task_type`, and the model config's
`architectures` (`BertModel` is an encoder, `LlamaForCausalLM` a decoder). A model none of
these describes is refused with a request for --kind rather than guessed: a wrong guess
surfaces later as an unrelated-looking error.
"""

from __future__ import annotations

import json
from pathlib import Path

from smora_cli.errors import UserInputError, first_line
from smora_cli.kinds import ModelKind

# PEFT task types -> smora kinds (FEATURE_EXTRACTION: a bare encoder, as smora's classifier).
TASK_TYPE_KINDS = {
    "CAUSAL_LM": ModelKind.CAUSAL_LM,
    "SEQ_2_SEQ_LM": ModelKind.SEQ2SEQ,
    "SEQ_CLS": ModelKind.CLASSIFIER,
    "FEATURE_EXTRACTION": ModelKind.CLASSIFIER,
}
_DECODER_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# Heads that sit on an encoder's hidden states: smora scores such a model as a classifier.
_ENCODER_SUFFIXES = (
    "Model",
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
    "ForPreTraining",
    "ForNextSentencePrediction",
)


def kind_of_architecture(name: str) -> ModelKind | None:
    """The kind of a decoder-only or encoder-only `transformers` class name, else None."""
    if name.endswith(_DECODER_SUFFIXES):
        return ModelKind.CAUSAL_LM
    if name.endswith(_ENCODER_SUFFIXES):
        return ModelKind.CLASSIFIER
    return None


def adapter_task_type(adapter: Path | None) -> str | None:
    """The PEFT `task_type` an adapter's config records (None when it records none)."""
    if adapter is None:
        return None
    try:
        data = json.loads((Path(adapter) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None  # reading the adapter reports its problem, with the adapter's name
    return data.get("task_type") if isinstance(data, dict) else None


def infer_kind(
    model: str, adapter: Path | None, heads_folders: list[Path]
) -> tuple[ModelKind, str]:
    """(kind, what it was read from) of `model` with `adapter`.

    Args:
        model: a model name or folder, as resolved by `resolve_model_path`.
        adapter: the adapter directory, if any.
        heads_folders: folders holding smora task heads (the adapter's or a merged model's).

    Raises:
        UserInputError: the config cannot be read, or says nothing about the kind.
    """
    if heads_folders:
        return ModelKind.CLASSIFIER, f"the task heads in {heads_folders[0]}"
    task_type = adapter_task_type(adapter)
    if task_type in TASK_TYPE_KINDS:
        return TASK_TYPE_KINDS[task_type], f"the adapter's task_type {task_type}"
    from transformers import AutoConfig

    from smora_cli.model_sources import resolve_model_path

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read the config of model {model!r}: {first_line(e)}") from e
    if getattr(config, "is_encoder_decoder", False):
        return ModelKind.SEQ2SEQ, "its config (is_encoder_decoder)"
    architectures = getattr(config, "architectures", None) or []
    kinds = {kind_of_architecture(name) for name in architectures} - {None}
    if len(kinds) == 1:
        return kinds.pop(), f"its config (architectures: {', '.join(architectures)})"
    raise UserInputError(
        f"cannot tell whether model {model!r} is a classifier, causal-lm or seq2seq model from "
        f"its config (architectures: {architectures or 'none recorded'}); pass --kind"
    )
