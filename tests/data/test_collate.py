"""Collators: loss only on target tokens, pairs and singles mixed, task ids carried."""

import torch
from transformers import AutoTokenizer

from smora_cli.data.collate import CausalLMCollator, ClassifierCollator, Seq2SeqCollator
from smora_cli.utils.labels import IGNORE
from tests.fixtures import bpe_tokenizer


def item(text, target=None, label=None, text_b=None, task_id=0):
    return {"text": text, "text_b": text_b, "target": target, "label": label, "task_id": task_id}


def test_causal_labels_cover_target_and_eos_only():
    """Left padding; labels are the last W positions, W = the longest target of the batch."""
    tokenizer = bpe_tokenizer()
    collate = CausalLMCollator(tokenizer, max_length=64, target_max_length=8)
    targets = ["positive and negative", "no"]
    batch = collate(
        [item("bad", targets[0], task_id=1), item("the movie was good", targets[1], task_id=0)]
    )
    target_lengths = [
        len(tokenizer(" " + t, add_special_tokens=False)["input_ids"]) + 1 for t in targets
    ]
    assert target_lengths[0] > target_lengths[1]
    assert batch["labels"].shape == (2, target_lengths[0])
    for row in range(2):
        ids, labels, mask = (
            batch["input_ids"][row],
            batch["labels"][row],
            batch["attention_mask"][row],
        )
        target = labels[labels != IGNORE]
        assert len(target) == target_lengths[row]
        assert target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]).strip() == targets[row]
        # Labels sit exactly on the target tokens at the end of the input.
        window = ids[-len(labels) :]
        assert torch.equal(window[labels != IGNORE], target)
        assert torch.equal(ids[-len(target) :], target)
        real = int(mask.sum())
        assert mask[-real:].all() and not mask[:-real].any()  # padding on the left
        assert (ids[:-real] == tokenizer.pad_token_id).all()
    assert not batch["attention_mask"].all()  # one row is padded
    assert batch["task_ids"].tolist() == [1, 0]


def test_causal_truncates_the_prompt_not_the_target():
    tokenizer = bpe_tokenizer()
    collate = CausalLMCollator(tokenizer, max_length=10, target_max_length=8)
    ids, labels = collate.encode("one two three four five six seven eight nine ten " * 3, "yes")
    assert len(ids) == 10
    assert tokenizer.decode([t for t in labels if t != IGNORE][:-1]).strip() == "yes"


def test_seq2seq_labels_padding_ignored():
    tokenizer = bpe_tokenizer()
    batch = Seq2SeqCollator(tokenizer, 32, 8)([item("a b", "positive"), item("c", "no")])
    assert (batch["labels"][1] == IGNORE).any()
    assert tokenizer.decode(batch["labels"][1][batch["labels"][1] != IGNORE]).strip() == "no"


def test_classifier_mixes_single_texts_and_pairs(encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    batch = ClassifierCollator(tokenizer, 16)(
        [item("good film", label=1), item("a", label=0.5, text_b="b", task_id=1)]
    )
    assert batch["labels"].tolist() == [1.0, 0.5]
    pair = tokenizer("a", "b")["input_ids"]
    assert batch["input_ids"][1][: len(pair)].tolist() == pair
    assert batch["token_type_ids"][1].max() == 1 and batch["token_type_ids"][0].max() == 0
