"""Checks that need the loaded tokenizer or model, made before the first training step.

The recipe check runs before anything loads; these catch what only the model knows (its
position limit, its tokenizer's special tokens), so a run fails with one line while its run
directory is still empty, instead of with a tensor-size traceback at step 1.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from smora_cli.errors import UserInputError
from smora_cli.kinds import ModelKind

# Files a tokenizer is read from; a folder with none of them has no tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# Config attributes that hold a model's number of learned positions.
POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_positions")


def check_tokenizer_files(path: str, name: str) -> None:
    """From a model folder without tokenizer files, transformers builds an empty tokenizer
    (its special tokens only: every word becomes [UNK]) and training runs on nothing.

    Raises:
        UserInputError: `path` is a folder holding none of `TOKENIZER_FILES`.
    """
    folder = Path(path)
    if folder.is_dir() and not any((folder / file).is_file() for file in TOKENIZER_FILES):
        raise UserInputError(
            f"{name} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); set "
            "model.tokenizer to the folder or Hub id of its tokenizer"
        )


def check_special_tokens(tokenizer, name: str, kind: str) -> None:
    """Give `tokenizer` a padding token if it has none (decoder-only models ship without);
    a causal LM's also needs an end-of-sequence token, which ends every target.

    Padding is masked out of attention and loss, so any special token serves: end of
    sequence first, then unknown, then beginning of sequence.

    Raises:
        UserInputError: no token to pad with, or a causal LM's tokenizer without one to end.
    """
    if kind == ModelKind.CAUSAL_LM and tokenizer.eos_token is None:
        raise UserInputError(
            f"the tokenizer of {name} has no end-of-sequence token, which ends every "
            "causal-lm target; set model.tokenizer to one that has"
        )
    if tokenizer.pad_token is not None:
        return
    for candidate in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
        if candidate is not None:
            tokenizer.pad_token = candidate
            return
    raise UserInputError(
        f"the tokenizer of {name} has no padding token and no end-of-sequence, unknown or "
        "beginning-of-sequence token to pad with; set model.tokenizer to one that has"
    )


def position_limit(model: nn.Module) -> int | None:
    """How many positions `model` has learned embeddings for, or None without a hard limit.

    Rotary and relative positions (Llama, T5) extrapolate, if badly; a learned position
    table (BERT, GPT-2, BART's with an offset of 2) has no row past its last one.
    """
    config = getattr(model, "config", None)
    limit = next(
        (
            getattr(config, a)
            for a in POSITION_ATTRIBUTES
            if isinstance(getattr(config, a, None), int)
        ),
        None,
    )
    if limit is None:
        return None
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings in (limit, limit + 2):
            return limit
    return None


def check_lengths(model: nn.Module, model_section, name: str) -> None:
    """Refuse `model.max_length` (and a seq2seq target length) past the model's positions.

    Raises:
        UserInputError: naming the key, the limit and the value to use instead.
    """
    limit = position_limit(model)
    if limit is None:
        return
    keys = ["max_length"] + (
        ["target_max_length"] if model_section.kind == ModelKind.SEQ2SEQ else []
    )
    for key in keys:
        value = getattr(model_section, key)
        if value > limit:
            raise UserInputError(
                f"model.{key}: {value} is more than the {limit} positions {name} has learned "
                f"embeddings for; set model.{key} to at most {limit}"
            )


def check_eval_split(tasks, eval_section) -> None:
    """Evaluation after training (and the untrained baseline) reads `eval.split` of every
    task: a split that is not on disk is named before training, not after it.

    Raises:
        UserInputError: naming the tasks without the split and the ways out.
    """
    from smora_cli.data.sources import split_available

    if not (eval_section.at_end or eval_section.baseline):
        return
    missing = [task.name for task in tasks if split_available(task, eval_section.split) is False]
    if missing:
        raise UserInputError(
            f"eval.split: task(s) {missing} have no {eval_section.split!r} split, which the "
            "evaluation after training reads; map it with tasks.N.splits, choose another "
            "eval.split, or set eval.at_end: false"
        )


def single_class_warnings(train_data) -> list[str]:
    """One line per classification task whose training examples all carry one label."""
    lines = []
    for data in train_data:
        ids = set((data.label_ids or {}).values())
        if data.task.type == "classification" and len(ids) == 1:
            label = data.task.label_names[ids.pop()]
            lines.append(
                f"warning: every training example of task {data.task.name!r} is labelled "
                f"{label!r}: it can only learn to answer {label!r} (check its label column)"
            )
    return lines
