"""Predictions per model kind: classifier heads, rank classification, generation.

Language models score classification tasks by rank classification: every verbalised label is
appended to the prompt, all (example, label) sequences of a batch go through ONE forward pass,
and the label with the highest total log-likelihood wins. Regression and free-form tasks are
generated greedily (regression parses the generated number).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from smora_cli.adapters.inject import routing_context
from smora_cli.data.collate import collator_for
from smora_cli.data.sources import TaskData
from smora_cli.errors import DataError
from smora_cli.models import example_losses, unwrap

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Scorer:
    """Turns batches of formatted examples into predictions for one model kind."""

    def __init__(
        self, model: nn.Module, kind: str, tokenizer, *, max_length: int, target_max_length: int
    ):
        self.model = model
        self.kind = kind
        self.tokenizer = tokenizer
        self.target_max_length = target_max_length
        self.collate = collator_for(kind, tokenizer, max_length, target_max_length)

    @torch.no_grad()
    def predict(self, data: TaskData, items: list[dict]) -> list:
        """Predictions for `items` of one task: class ids, floats or strings."""
        task_ids = torch.full((len(items),), data.task_id, dtype=torch.long)
        with routing_context(self.model, task_ids=task_ids):
            if self.kind == "classifier":
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
        expanded = [{**item, "target": label} for item in items for label in labels]
        batch = self._to_device(self.collate(expanded))
        with routing_context(self.model, task_ids=batch["task_ids"]):
            loss_sums, _ = example_losses(self.model, batch, self.kind)
        scores = -loss_sums.view(len(items), len(labels))  # total log-likelihood per label
        return scores.argmax(dim=1).tolist()

    def _check_label_lengths(self, task: str, labels: list[str]) -> None:
        """Refuse labels the collator would cut: truncated labels can no longer be told apart."""
        room = self.target_max_length - 1  # the collator keeps one position for EOS
        for label in labels:
            length = len(self.tokenizer(" " + label, add_special_tokens=False)["input_ids"])
            if length > room:
                raise DataError(
                    f"task {task!r}: label {label!r} is {length} tokens, more than "
                    f"model.target_max_length - 1 = {room}; raise model.target_max_length"
                )

    def _generate(self, items: list[dict]) -> list[str]:
        tokenizer, model = self.tokenizer, unwrap(self.model)
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues from the last real token
        try:
            batch = tokenizer(
                [item["text"] for item in items],
                padding=True,
                truncation=True,
                max_length=self.collate.max_length,
                return_tensors="pt",
            )
        finally:
            tokenizer.padding_side = side
        batch = self._to_device(dict(batch))
        output = model.generate(
            **batch,
            max_new_tokens=self.target_max_length,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        if self.kind == "causal-lm":
            output = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


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
