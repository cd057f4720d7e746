"""Predictions per model kind: classifier heads, rank classification, generation.

Language models score classification tasks by rank classification: the verbalised label with
the highest total log-likelihood after the prompt wins. A causal LM runs each prompt once and
all labels on its key/value cache (`shared_prompt_log_likelihoods`); an encoder-decoder (or a
model without a shareable cache) runs every (example, label) sequence of a batch in one forward
pass. Regression and free-form tasks are generated greedily (regression parses the number).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from smora_cli.adapters.inject import routing_context
from smora_cli.data.collate import collator_for
from smora_cli.data.sources import TaskData
from smora_cli.errors import DataError
from smora_cli.kinds import ModelKind
from smora_cli.models import accepts, example_losses, unwrap, with_positions

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Scorer:
    """Turns batches of formatted examples into predictions for one model kind."""

    def __init__(
        self,
        model: nn.Module,
        kind: str,
        tokenizer,
        *,
        max_length: int,
        target_max_length: int,
        chat: bool = False,
        show_progress: bool = True,
    ):
        self.show_progress = show_progress  # evaluation shows a bar per task
        self.model = model
        self.kind = kind
        self.tokenizer = tokenizer
        self.target_max_length = target_max_length
        self.collate = collator_for(kind, tokenizer, max_length, target_max_length, chat=chat)

    @torch.no_grad()
    def predict(self, data: TaskData, items: list[dict]) -> list:
        """Predictions for `items` of one task: class ids, floats or strings."""
        task_ids = torch.full((len(items),), data.task_id, dtype=torch.long)
        with routing_context(self.model, task_ids=task_ids):
            if self.kind == ModelKind.CLASSIFIER:
                return self._classify(items)
            if data.task.type == "classification":
                return self._rank_classify(data, items)
            texts = self._generate(items)
        if data.task.type == "regression":
            return [_parse_number(text) for text in texts]
        return texts

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self._device()) for k, v in batch.items()}

    def _classify(self, items: list[dict]) -> list:
        batch = self._to_device(self.collate(items))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = self.model(**inputs)
        predictions = unwrap(self.model).predict(logits, batch["task_ids"])
        regression = unwrap(self.model).is_regression[batch["task_ids"]]
        return [
            float(p) if r else int(p)
            for p, r in zip(predictions.tolist(), regression.tolist(), strict=True)
        ]

    def _rank_classify(self, data: TaskData, items: list[dict]) -> list[int]:
        labels = data.task.label_names
        self._check_label_lengths(data.task.name, labels)
        scores = None
        if self.kind == ModelKind.CAUSAL_LM:
            scores = self._shared_prompt_scores(items, labels, data.task_id)
        if scores is None:  # seq2seq, or a model whose cache cannot be shared
            scores = self._expanded_scores(items, labels)
        return scores.argmax(dim=1).tolist()

    def _expanded_scores(self, items: list[dict], labels: list[str]) -> Tensor:
        """[N, L] log-likelihoods from one sequence per (example, label), in one batch."""
        expanded = [{**item, "target": label} for item in items for label in labels]
        batch = self._to_device(self.collate(expanded))
        with routing_context(self.model, task_ids=batch["task_ids"]):
            loss_sums, _ = example_losses(self.model, batch, self.kind)
        return -loss_sums.view(len(items), len(labels))

    def _shared_prompt_scores(
        self, items: list[dict], labels: list[str], task_id: int
    ) -> Tensor | None:
        targets = [self.collate.target_ids(label) for label in labels]
        room = self.collate.max_length - max(len(t) for t in targets)
        prompts = [self.collate.prompt_ids(item["text"], room) for item in items]
        return shared_prompt_log_likelihoods(
            self.model, prompts, targets, self.tokenizer.pad_token_id, task_id
        )

    def _check_label_lengths(self, task: str, labels: list[str]) -> None:
        """Refuse labels the collator would cut: truncated labels can no longer be told apart."""
        room = self.target_max_length - 1  # the collator keeps one position for the end token
        prefix = "" if getattr(self.collate, "chat", None) else " "
        for label in labels:
            length = len(self.tokenizer(prefix + label, add_special_tokens=False)["input_ids"])
            if length > room:
                raise DataError(
                    f"task {task!r}: label {label!r} is {length} tokens, more than "
                    f"model.target_max_length - 1 = {room}; raise model.target_max_length"
                )

    def _generate(self, items: list[dict]) -> list[str]:
        tokenizer, model = self.tokenizer, unwrap(self.model)
        if self.kind == ModelKind.CAUSAL_LM:
            # The prompts exactly as training saw them (chat template, left truncation).
            room = self.collate.max_length
            prompts = [self.collate.prompt_ids(item["text"], room) for item in items]
            ids, mask = _padded(prompts, tokenizer.pad_token_id, self._device(), left=True)
            batch = {"input_ids": ids, "attention_mask": mask}  # generate() derives positions
            stop = sorted({self.collate.end_id, tokenizer.eos_token_id} - {None})
        else:
            batch = self._to_device(self.collate.encode_inputs([item["text"] for item in items]))
            stop = tokenizer.eos_token_id
        output = model.generate(
            **batch,
            max_new_tokens=self.target_max_length,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        if self.kind == ModelKind.CAUSAL_LM:
            output = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


@torch.no_grad()
def shared_prompt_log_likelihoods(
    model: nn.Module,
    prompts: list[list[int]],
    targets: list[list[int]],
    pad_id: int,
    task_id: int = 0,
) -> Tensor | None:
    """[N, L] log-likelihood of each target token sequence after each prompt (causal LM).

    Pass 1 runs the N left-padded prompts once and keeps their key/value cache. Pass 2 runs
    every target after its prompt in one packed row per prompt: the L targets side by side,
    each at the positions that follow the prompt, under a block attention mask (a target's
    tokens see the prompt and their own earlier tokens, never another target). Against one
    sequence per (prompt, target) this skips L - 1 of every L prompt forwards; against
    repeating the cache L times it copies no cache. Returns None when the model keeps no
    cache or takes no `position_ids` (the caller then runs one sequence per pair).
    """
    if not accepts(model, "position_ids"):
        return None
    device = next(model.parameters()).device
    ids, mask = _padded(prompts, pad_id, device, left=True)
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    first = model(
        **with_positions(model, {"input_ids": ids, "attention_mask": mask}), use_cache=True, **keep
    )
    # transformers 5.x calls the key/value cache `cache`, 4.x `past_key_values`.
    cache_name = "cache" if accepts(model, "cache") else "past_key_values"
    cache = first.get(cache_name)
    if cache is None:
        return None
    # Token 0 of a target is predicted by the prompt's last position.
    first_log_probs = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # [N, V]
    scores = first_log_probs[:, [target[0] for target in targets]]  # [N, L]
    packed = _PackedTargets(targets, device)
    if packed.length == 0:  # one-token targets: the prompt pass scored them already
        return scores
    # Token j > 0 is predicted by the packed position of token j - 1; a target's last token
    # is only predicted, never read.
    inputs = {
        "input_ids": packed.tokens.expand(len(prompts), -1),
        "attention_mask": packed.attention(mask, _mask_dtype(model)),
        "position_ids": mask.sum(-1, keepdim=True) + packed.offsets,  # [N, T]
    }
    with routing_context(model, task_ids=torch.full((len(prompts),), task_id, device=device)):
        logits = model(**inputs, **{cache_name: cache}).logits.float()  # [N, T, V]
    following = packed.following.expand(len(prompts), -1)
    picked = logits.gather(2, following[..., None]).squeeze(2) - logits.logsumexp(-1)  # [N, T]
    return scores + picked @ packed.owner_matrix  # [N, L]


class _PackedTargets:
    """All targets' read tokens (every token but each target's last) in one row of T."""

    def __init__(self, targets: list[list[int]], device):
        tokens, following, owner, offsets = [], [], [], []
        for index, target in enumerate(targets):
            for position, (token, after) in enumerate(zip(target, target[1:], strict=False)):
                tokens.append(token)
                following.append(after)
                owner.append(index)
                offsets.append(position)
        self.length = len(tokens)
        as_long = {"dtype": torch.long, "device": device}
        self.tokens = torch.tensor([tokens], **as_long)  # [1, T]
        self.following = torch.tensor([following], **as_long)  # [1, T]
        self.offsets = torch.tensor([offsets], **as_long)  # [1, T]
        self.owner = torch.tensor(owner, **as_long)  # [T]
        # [T, L] one-hot: sums each target's token log-probabilities
        self.owner_matrix = torch.zeros(self.length, len(targets), device=device)
        self.owner_matrix[torch.arange(self.length), self.owner] = 1.0

    def attention(self, prompt_mask: Tensor, dtype: torch.dtype) -> Tensor:
        """[N, 1, T, S + T] additive mask: the real prompt tokens, then own earlier tokens."""
        positions = torch.arange(self.length, device=self.owner.device)
        own = (self.owner[:, None] == self.owner[None, :]) & (
            positions[None, :] <= positions[:, None]
        )
        allowed = torch.cat(
            [
                prompt_mask.bool()[:, None, :].expand(-1, self.length, -1),  # [N, T, S]
                own[None].expand(prompt_mask.shape[0], -1, -1),  # [N, T, T]
            ],
            dim=-1,
        )
        blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return blocked.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _mask_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model's attention runs in (its additive masks must match it)."""
    dtype = getattr(unwrap(model), "dtype", torch.float32)
    return dtype if dtype.is_floating_point else torch.float32


def _padded(sequences: list[list[int]], pad: int, device, *, left: bool) -> tuple[Tensor, Tensor]:
    """[N, S] ids and attention mask; left padding ends every sequence at position S - 1."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def _parse_number(text: str) -> float:
    """First number in generated text; NaN-free: unparsable output scores as 0."""
    match = _NUMBER.search(text)
    value = float(match.group()) if match else 0.0
    return value if math.isfinite(value) else 0.0


def references(data: TaskData, items: list[dict]) -> list:
    """Gold answers in the form `Scorer.predict` returns."""
    if data.task.type == "generation":
        return [item["target"] for item in items]
    if data.task.type == "regression":
        return [float(item["label"]) for item in items]
    return [int(item["label"]) for item in items]
