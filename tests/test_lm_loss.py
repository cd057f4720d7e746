"""Causal-LM loss on left-padded batches with logits of the target window only."""

import pytest
import torch
from torch import nn

from smora_cli.data.collate import CausalLMCollator
from smora_cli.models import example_losses
from smora_cli.utils.labels import IGNORE
from tests import tiny_models
from tests.fixtures import bpe_tokenizer

PAIRS = [
    ("the movie was good and the actors were fine", "positive"),
    ("bad", "negative and up"),
    ("yes or no", "no"),
]


def model_for(arch: str, vocab: int) -> nn.Module:
    # GPT-2 has learned absolute positions: padding must not shift them.
    return tiny_models.gpt2(vocab=vocab) if arch == "gpt2" else tiny_models.llama(vocab=vocab)


def unpadded_losses(model, collate) -> tuple[list[float], list[int]]:
    """Each example alone, no padding, full logits: -sum log p(target token)."""
    losses, counts = [], []
    for prompt, target in PAIRS:
        ids, labels = collate.encode(prompt, target)
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
        picked = [-log_probs[t - 1, ids[t]] for t in range(1, len(ids)) if labels[t] != IGNORE]
        losses.append(float(sum(picked)))
        counts.append(len(picked))
    return losses, counts


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_window_loss_equals_unpadded_full_logits(arch):
    tokenizer = bpe_tokenizer()
    model = model_for(arch, len(tokenizer))
    collate = CausalLMCollator(tokenizer, max_length=64, target_max_length=8)
    batch = collate([{"text": p, "target": t, "task_id": 0} for p, t in PAIRS])
    positions = []
    hook = model.lm_head.register_forward_hook(
        lambda _m, args, _o: positions.append(args[0].shape[1])
    )
    with torch.no_grad():
        losses, counts = example_losses(model, batch, "causal-lm")
    hook.remove()
    expected, expected_counts = unpadded_losses(model, collate)
    assert counts.tolist() == expected_counts
    torch.testing.assert_close(losses, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    # Only the target window reaches the vocabulary projection, not the padded prompt.
    assert positions == [batch["labels"].shape[1] + 1]
    assert positions[0] < batch["input_ids"].shape[1]


class PlainCausalLM(nn.Module):
    """A causal LM whose forward takes neither `position_ids` nor `logits_to_keep`."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_models_without_logits_to_keep_are_sliced_after_the_forward():
    tokenizer = bpe_tokenizer()
    model = model_for("llama", len(tokenizer))
    collate = CausalLMCollator(tokenizer, max_length=64, target_max_length=8)
    batch = collate([{"text": p, "target": t, "task_id": 0} for p, t in PAIRS])
    with torch.no_grad():
        losses, _ = example_losses(PlainCausalLM(model), batch, "causal-lm")
    expected, _ = unpadded_losses(model, collate)
    # Rotary positions are relative: shifted by the padding, scores agree to rounding.
    torch.testing.assert_close(losses, torch.tensor(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rank_classification_on_a_shared_prompt_cache_equals_full_sequences(arch):
    from smora_cli.evaluation.scoring import Scorer

    tokenizer = bpe_tokenizer()
    model = model_for(arch, len(tokenizer))
    scorer = Scorer(model, "causal-lm", tokenizer, max_length=64, target_max_length=8)
    items = [{"text": prompt, "task_id": 0} for prompt, _ in PAIRS]
    labels = ["positive", "negative and up", "no"]
    with torch.no_grad():
        shared = scorer._shared_prompt_scores(items, labels, task_id=0)
        expanded = scorer._expanded_scores(items, labels)
    assert shared.shape == (3, 3)
    torch.testing.assert_close(shared, expanded, rtol=1e-5, atol=1e-5)
