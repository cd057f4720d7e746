"""Checks that need the loaded tokenizer or model, made before the first training step.

The recipe check runs before anything loads; these catch what only the model knows (its
position limit, its tokenizer's special tokens), so a run fails with one line while its run
directory is still empty, instead of with a tensor-size traceback at step 1.
"""

from __future__ import annotations

from torch import nn

from smora_cli.errors import UserInputError

# Config attributes that hold a model's number of learned positions.
POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_positions")


def ensure_pad_token(tokenizer, name: str) -> None:
    """Give `tokenizer` a padding token if it has none (decoder-only models ship without).

    Padding is masked out of attention and loss, so any special token serves: end of
    sequence first, then unknown, then beginning of sequence.

    Raises:
        UserInputError: the tokenizer has none of these tokens.
    """
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
    keys = ["max_length"] + (["target_max_length"] if model_section.kind == "seq2seq" else [])
    for key in keys:
        value = getattr(model_section, key)
        if value > limit:
            raise UserInputError(
                f"model.{key}: {value} is more than the {limit} positions {name} has learned "
                f"embeddings for; set model.{key} to at most {limit}"
            )
