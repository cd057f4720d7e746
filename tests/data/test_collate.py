"""Collators: loss only on target tokens, pairs and singles mixed, task ids carried."""

import torch
from transformers import AutoTokenizer

from smora_cli.data.collate import IGNORE, CausalLMCollator, ClassifierCollator, Seq2SeqCollator
from tests.fixtures import bpe_tokenizer


def item(text, target=None, label=None, text_b=None, task_id=0):
    return {"text": text, "text_b": text_b, "target": target, "label": label, "task_id": task_id}


def test_causal_labels_cover_target_and_eos_only():
    tokenizer = bpe_tokenizer()
    collate = CausalLMCollator(tokenizer, max_length=64, target_max_length=8)
    batch = collate(
        [item("the movie was good", "positive", task_id=1), item("bad", "negative", task_id=0)]
    )
    for row in range(2):
        ids, labels, mask = (
            batch["input_ids"][row],
            batch["labels"][row],
            batch["attention_mask"][row],
        )
        target = labels[labels != IGNORE]
        assert target[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(target[:-1])
        assert text.strip() == ["positive", "negative"][row]
        # Labels sit exactly on the target tokens of the input.
        assert torch.equal(ids[labels != IGNORE], target)
        assert mask.sum() == (ids != tokenizer.pad_token_id).sum()
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
