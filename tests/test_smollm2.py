"""The real decoder: SmolLM2-135M-Instruct (packaged GGUF, converted once per session)."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from smora_cli import AdapterConfig, attach, fold, routing_context
from smora_cli.data.collate import CausalLMCollator
from smora_cli.data.tasks import resolve_task
from smora_cli.evaluation.scoring import Scorer
from smora_cli.models import load_base_model, load_tokenizer
from smora_cli.recipe import TaskSpec, recipe_from_dict
from smora_cli.train import Trainer, run
from tests import tiny_models
from tests.fixtures import sentiment_rows, task_folder

PROMPTS = [
    "Review: a gorgeous, witty, seductive movie.\nIs this review positive or negative?",
    "Review: the plot is a mess and the jokes fall flat.\nIs this review positive or negative?",
    "Is the sky blue?",
]


def _model(path):
    return load_base_model(str(path), kind="causal-lm").eval()


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return load_tokenizer(str(smollm2_path), kind="causal-lm")


def test_conversion_is_a_plain_llama_that_answers(smollm2_path, tokenizer):
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    model = _model(smollm2_path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_chat_prompts_render_as_apply_chat_template(tokenizer):
    collate = CausalLMCollator(tokenizer, max_length=256, target_max_length=8, chat=True)
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        expected = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert collate.prompt_ids(prompt, room=256) == list(expected)
        ids, labels = collate.encode(prompt, "positive")
        answered = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": "positive"}],
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        # The template closes the answer with <|im_end|> and a newline; training stops at the
        # end-of-turn token, which is what generation stops at.
        assert ids == list(answered)[:-1]
        assert tokenizer.convert_ids_to_tokens(ids[-1]) == "<|im_end|>"
        assert labels[: len(expected)] == [-100] * len(expected)
    cut = collate.prompt_ids(PROMPTS[0] * 20, room=60)
    assert len(cut) == 60 and cut[-3:] == list(expected)[-3:]  # the assistant header stays
    assert cut[:5] == list(expected)[:5]  # and the system turn too


def test_rank_classification_equals_a_per_label_computation(smollm2_path, tokenizer):
    model = _model(smollm2_path)
    spec = TaskSpec(name="polarity", source="unused", labels=["negative", "positive"])
    data = SimpleNamespace(task=resolve_task(spec), task_id=0)
    scorer = Scorer(model, "causal-lm", tokenizer, max_length=96, target_max_length=8, chat=True)
    items = [{"text": p, "target": None, "task_id": 0} for p in PROMPTS]
    scores = scorer._shared_prompt_scores(items, ["negative", "positive"], task_id=0)

    expected = torch.zeros(len(PROMPTS), 2)
    for i, prompt in enumerate(PROMPTS):
        for j, label in enumerate(["negative", "positive"]):
            head = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
            tail = tokenizer(label, add_special_tokens=False)["input_ids"]
            tail += tokenizer.convert_tokens_to_ids(["<|im_end|>"])
            ids = torch.tensor([list(head) + tail])
            with torch.no_grad():
                log_probs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            positions = range(len(head) - 1, len(head) - 1 + len(tail))
            expected[i, j] = sum(log_probs[p, t] for p, t in zip(positions, tail, strict=True))
    torch.testing.assert_close(scores, expected, atol=2e-3, rtol=1e-4)
    assert scorer.predict(data, items) == scores.argmax(dim=1).tolist()


def test_folded_lora_gives_the_unfolded_logits(smollm2_path, tokenizer):
    model = attach(
        _model(smollm2_path), AdapterConfig(method="lora", r=8, target_modules="all-linear")
    )
    tiny_models.randomize_adapter(model, std=0.01)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**batch).logits
        fold(model)
        folded = model(**batch).logits
    assert not any("lora" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(folded, expected, atol=2e-3, rtol=1e-3)


def test_generate_with_a_routed_adapter_equals_a_no_cache_greedy_loop(smollm2_path, tokenizer):
    # float64: cached and uncached attention then agree far below any top-k or argmax margin.
    model = attach(
        _model(smollm2_path).double(),
        AdapterConfig(method="smora", r=16, k=4, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    tiny_models.randomize_adapter(model, std=0.02)
    chat = [{"role": "user", "content": "Name a colour."}]
    prompt = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad(), routing_context(model):
        cached = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)
        ids = prompt
        for _ in range(8):
            logits = model(ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert cached.tolist() == ids.tolist()


def test_smora_train_killed_and_resumed_ends_bitwise_equal(smollm2_path, tmp_path, monkeypatch):
    data = task_folder(tmp_path / "data", "sent", sentiment_rows, n_train=32, n_val=8)
    recipe = {
        "model": {
            "name_or_path": str(smollm2_path),
            "kind": "causal-lm",
            "max_length": 40,
            "target_max_length": 4,
        },
        "adapter": {"method": "smora", "r": 16, "k": 4, "target_modules": ["q_proj", "v_proj"]},
        "tasks": [{"name": "sent", "source": str(data), "labels": ["negative", "positive"]}],
        "train": {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "save_steps": 1, "log_steps": 1},
        "eval": {"at_end": False},
    }
    quiet = {"show_progress": False, "echo": lambda *_: None}
    whole = recipe_from_dict(recipe, [f"train.output_dir={tmp_path / 'whole'}"])
    said = []
    run(whole, show_progress=False, echo=said.append)
    assert whole.model.chat_template is True  # an instruct model: prompts go through the template
    # Router warnings: at most one line per log step; the per-layer detail is in metrics.jsonl.
    warnings = [line for line in said if "router imbalance" in line]
    assert len(warnings) <= 3 and all("\n" not in line for line in warnings)
    entries = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").open()]
    assert [e["step"] for e in entries] == [1, 2, 3]
    for entry in entries:
        assert len(entry["router"]["layers"]) == 60  # q_proj and v_proj of 30 blocks
        assert set(entry["router"]["imbalanced"]) <= set(entry["router"]["layers"])

    original = Trainer._optimizer_step

    def interrupted_step(self, step):
        stats = original(self, step)
        if step == 0 and not self.resume:
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted_step)
    split = [f"train.output_dir={tmp_path / 'split'}"]
    assert run(recipe_from_dict(recipe, split), **quiet).status == "interrupted"
    run(recipe_from_dict(recipe, split), resume=True, **quiet)

    expected = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    got = load_file(tmp_path / "split" / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert any(t.abs().sum() > 0 for k, t in expected.items() if "lora_B" in k)


def test_chat_template_setting(tokenizer, decoder_dir):
    from smora_cli.errors import UserInputError
    from smora_cli.models import use_chat_template

    plain = load_tokenizer(str(decoder_dir), kind="causal-lm")  # a base model: no template
    assert use_chat_template(None, "causal-lm", tokenizer) is True
    assert use_chat_template(False, "causal-lm", tokenizer) is False
    assert use_chat_template(None, "causal-lm", plain) is False
    assert use_chat_template(None, "classifier", tokenizer) is False
    with pytest.raises(UserInputError, match="chat_template: true, but its tokenizer has none"):
        use_chat_template(True, "causal-lm", plain)
    with pytest.raises(UserInputError, match="chat_template: true, but model.kind is seq2seq"):
        use_chat_template(True, "seq2seq", tokenizer)
