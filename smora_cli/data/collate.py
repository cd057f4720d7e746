"""Collators: turn formatted examples into padded model inputs for each model kind.

Every batch carries `task_ids [B]`; language-model batches put -100 on every label position
that is not target text, so the loss covers the target only.

Causal-LM batches are left-padded, so every target ends at the last position, and their
`labels [B, W]` cover only the last W positions (W = the longest target in the batch): the
loss then needs the vocabulary logits of those positions only (`models.example_losses`), not
of the whole prompt, which is most of a sequence and, with a large vocabulary, most of the
activation memory.
"""

from __future__ import annotations

import torch

from smora_cli.kinds import ModelKind
from smora_cli.utils.labels import IGNORE


class ClassifierCollator:
    """Single texts or text pairs -> input ids, attention mask, labels (float) and task ids."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        # Encoded one by one: a batch may mix single-text and pair tasks.
        encoded = [
            self.tokenizer(
                item["text"], item["text_b"], truncation=True, max_length=self.max_length
            )
            for item in items
        ]
        batch = dict(self.tokenizer.pad(encoded, return_tensors="pt"))
        labels = [item["label"] if item["label"] is not None else float("nan") for item in items]
        batch["labels"] = torch.tensor(labels, dtype=torch.float32)
        batch["task_ids"] = torch.tensor([item["task_id"] for item in items], dtype=torch.long)
        return batch


class CausalLMCollator:
    """prompt + target + end token in one left-padded sequence; labels on the trailing targets.

    With `chat=True` the prompt is the user turn of the tokenizer's chat template (with the
    assistant header after it) and the target ends with the template's end-of-turn token;
    otherwise the target follows the prompt after a space and ends with EOS.
    """

    def __init__(self, tokenizer, max_length: int, target_max_length: int, *, chat: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.target_max_length = target_max_length
        self.chat = ChatFormat(tokenizer) if chat else None
        self.end_id = self.chat.end_id if self.chat else tokenizer.eos_token_id

    def encode(self, prompt: str, target: str | None) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one example; the prompt is cut from the left if too long."""
        target_ids = [] if target is None else self.target_ids(target)
        prompt_ids = self.prompt_ids(prompt, room=self.max_length - len(target_ids))
        return prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids

    def target_ids(self, target: str) -> list[int]:
        """The target's tokens (cut to target_max_length - 1) and the end token."""
        text = target if self.chat else " " + target
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: self.target_max_length - 1] + [self.end_id]

    def prompt_ids(self, prompt: str, room: int) -> list[int]:
        """At most `room` tokens (at least one) of the prompt, keeping its end."""
        room = max(1, room)
        if self.chat:
            return self.chat.prompt_ids(prompt, room)
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"][-room:]

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        pairs = [self.encode(item["text"], item["target"]) for item in items]
        length = max(len(ids) for ids, _ in pairs)
        window = max(1, max(sum(t != IGNORE for t in target) for _, target in pairs))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(items), length), pad, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, (ids, target) in enumerate(pairs):
            input_ids[row, length - len(ids) :] = torch.tensor(ids)
            labels[row, length - len(ids) :] = torch.tensor(target)
            mask[row, length - len(ids) :] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels[:, length - window :],
            "task_ids": torch.tensor([item["task_id"] for item in items], dtype=torch.long),
        }


class Seq2SeqCollator:
    """Prompt -> encoder input; target -> decoder labels (padding as -100)."""

    def __init__(self, tokenizer, max_length: int, target_max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.target_max_length = target_max_length

    def encode_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Encoder input ids and mask; encoder-decoders take no token_type_ids, which generic
        tokenizers of transformers 4.x return."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.encode_inputs([item["text"] for item in items])
        targets = [item["target"] or "" for item in items]
        encoded = self.tokenizer(
            text_target=targets,
            padding=True,
            truncation=True,
            max_length=self.target_max_length,
            return_tensors="pt",
        )
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, IGNORE)
        batch["labels"] = labels
        batch["task_ids"] = torch.tensor([item["task_id"] for item in items], dtype=torch.long)
        return batch


class ChatFormat:
    """A prompt as the user turn of the tokenizer's chat template, ready for the answer.

    An untruncated prompt is tokenized exactly as `apply_chat_template(...,
    add_generation_prompt=True)` does. A long one loses tokens from the start of the user's
    text, never the template around it (system turn, role headers).
    """

    _MARK = "\x00smora\x00"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        before, _, after = self._render(self._MARK).partition(self._MARK)
        self.head = tokenizer(before, add_special_tokens=False)["input_ids"]
        self.tail = tokenizer(after, add_special_tokens=False)["input_ids"]
        self.end_id = self._end_of_turn()

    def _render(self, content: str, answer: str | None = None) -> str:
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=answer is None
        )

    def _end_of_turn(self) -> int:
        """The first token the template puts after an assistant answer (e.g. <|im_end|>)."""
        rendered = self._render("q", answer=self._MARK)
        after = rendered.partition(self._MARK)[2]
        ids = self.tokenizer(after, add_special_tokens=False)["input_ids"]
        return ids[0] if ids else self.tokenizer.eos_token_id

    def prompt_ids(self, prompt: str, room: int) -> list[int]:
        ids = self.tokenizer(self._render(prompt), add_special_tokens=False)["input_ids"]
        if len(ids) <= room:
            return ids
        content = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        keep = max(0, room - len(self.head) - len(self.tail))
        return (self.head + content[len(content) - keep :] + self.tail)[-room:]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def collator_for(
    kind: str, tokenizer, max_length: int, target_max_length: int, *, chat: bool = False
):
    """The collator of a model kind (`classifier`, `causal-lm`, `seq2seq`).

    `chat` (causal LMs only): render prompts through the tokenizer's chat template.
    """
    if kind == ModelKind.CLASSIFIER:
        return ClassifierCollator(tokenizer, max_length)
    if kind == ModelKind.CAUSAL_LM:
        return CausalLMCollator(tokenizer, max_length, target_max_length, chat=chat)
    return Seq2SeqCollator(tokenizer, max_length, target_max_length)
