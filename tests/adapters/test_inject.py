"""Attaching to real transformers architectures; equality with PEFT's LoRA; parameter counts."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from smora_cli.adapters import (
    AdapterConfig,
    adapter_layers,
    adapters_disabled,
    attach,
    count_parameters,
    fold,
    routing_context,
)
from tests import tiny_models as tm

ARCHITECTURES = {
    "llama": (
        tm.llama,
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    ),
    "gpt2": (tm.gpt2, {"c_attn", "c_proj", "c_fc"}),
    "bert": (tm.bert, {"query", "key", "value", "dense"}),
    "t5": (tm.t5, {"q", "k", "v", "o", "wi", "wo"}),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_all_linear_targets_and_heads_excluded(arch):
    build, leaf_names = ARCHITECTURES[arch]
    model = build()
    batch = tm.inputs()
    base_logits = tm.forward(model, batch)
    attach(model, AdapterConfig(method="smora", r=8, k=2, target_modules="all-linear"))
    paths = [path for path, _ in adapter_layers(model)]
    assert {p.rsplit(".", 1)[-1] for p in paths} == leaf_names
    assert not any(part in p for p in paths for part in ("lm_head", "classifier", "pooler"))
    if arch == "t5":
        assert any("EncDecAttention" in p for p in paths), "cross-attention must be adapted"
    # B = 0 at init: the adapted model computes exactly the base model.
    torch.testing.assert_close(tm.forward(model, batch), base_logits)
    tm.randomize_adapter(model)
    adapted = tm.forward(model, batch)
    assert not torch.allclose(adapted, base_logits)
    with adapters_disabled(model):
        torch.testing.assert_close(tm.forward(model, batch), base_logits)


def test_base_frozen_and_counts():
    model = tm.llama()
    total_base = sum(p.numel() for p in model.parameters())
    attach(model, AdapterConfig(method="smora", r=8, k=2, target_modules=["q_proj", "v_proj"]))
    assert all(
        not p.requires_grad
        for n, p in model.named_parameters()
        if "base_layer" in n or "embed" in n or "norm" in n
    )
    counts = count_parameters(model)
    # Per layer: A [8, 32] + B [out, 8] + router [8, 32]; q out=32, v out=16 (2 kv heads x 8).
    per_layer_q = 8 * 32 + 32 * 8 + 8 * 32
    per_layer_v = 8 * 32 + 16 * 8 + 8 * 32
    assert counts.adapter == counts.trainable == 2 * (per_layer_q + per_layer_v)
    assert counts.total == total_base + counts.adapter
    # Activated per token: k=2 ranks of A and B plus the whole router.
    assert counts.activated == 2 * (2 * (32 + 32) + 8 * 32) + 2 * (2 * (32 + 16) + 8 * 32)


def test_target_selection_forms():
    model = tm.llama()
    attach(model, AdapterConfig(target_modules=r"model\.layers\.0\.self_attn\.(q|v)_proj"))
    assert [p for p, _ in adapter_layers(model)] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    model = tm.llama()
    attach(model, AdapterConfig(target_modules="all-linear", exclude_modules=["mlp.down_proj"]))
    assert not any(p.endswith("down_proj") for p, _ in adapter_layers(model))
    model = tm.llama()
    attach(model, AdapterConfig(target_modules=["lm_head"]))  # heads when asked explicitly
    assert [p for p, _ in adapter_layers(model)] == ["lm_head"]


def test_bad_targets_are_clear_errors():
    with pytest.raises(ValueError, match="matched no module.*q_proj"):
        attach(tm.llama(), AdapterConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="is a LlamaRMSNorm"):
        attach(tm.llama(), AdapterConfig(target_modules=["input_layernorm"]))
    model = attach(tm.llama(), AdapterConfig())
    with pytest.raises(ValueError, match="already has a smora adapter"):
        attach(model, AdapterConfig())


@pytest.mark.parametrize("use_rslora", [False, True])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_equals_peft(arch, use_rslora):
    build = ARCHITECTURES[arch][0]
    peft_model = get_peft_model(
        build(),
        LoraConfig(
            r=4,
            lora_alpha=12,
            lora_dropout=0.0,
            target_modules="all-linear",
            use_rslora=use_rslora,
            init_lora_weights=False,
        ),
    )
    ours = attach(build(), AdapterConfig(method="lora", r=4, alpha=12, use_rslora=use_rslora))
    peft_modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for path, layer in adapter_layers(ours):
            layer.lora_A.copy_(peft_modules[path].lora_A["default"].weight)
            layer.lora_B.copy_(peft_modules[path].lora_B["default"].weight)
            assert layer.scaling == pytest.approx(peft_modules[path].scaling["default"])
    batch = tm.inputs()
    expected = peft_model(**batch).logits
    assert not torch.allclose(expected, tm.forward(build(), batch))
    torch.testing.assert_close(tm.forward(ours, batch), expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_fold_lora_equals_adapter(arch):
    model = attach(ARCHITECTURES[arch][0](), AdapterConfig(method="lora", r=4))
    tm.randomize_adapter(model)
    batch = tm.inputs()
    expected = tm.forward(model, batch)
    fold(model)
    assert not list(adapter_layers(model))
    assert type(model) is type(ARCHITECTURES[arch][0]())
    torch.testing.assert_close(tm.forward(model, batch), expected, atol=1e-5, rtol=1e-5)


def test_fold_more_per_task_on_t5():
    model = attach(tm.t5(), AdapterConfig(method="more", r=4, task_names=["x", "y"]))
    tm.randomize_adapter(model)
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            layer.router.task_embedding.normal_()
    batch = tm.inputs()
    with routing_context(model, task_ids=1, token_masks=batch["attention_mask"]):
        expected = tm.forward(model, batch)
    fold(model, task="y")
    torch.testing.assert_close(tm.forward(model, batch), expected, atol=1e-5, rtol=1e-5)


def test_fold_refuses_token_routed_and_unknown_task():
    model = attach(tm.llama(), AdapterConfig(method="smora", r=4, k=2))
    with pytest.raises(ValueError, match="cannot be folded.*merge"):
        fold(model)
    assert list(adapter_layers(model)), "a refused fold must leave the adapter in place"
    more = attach(tm.llama(), AdapterConfig(method="more", r=4, task_names=["a"]))
    with pytest.raises(ValueError, match="task 'b' is not one"):
        fold(more, task="b")
    with pytest.raises(ValueError, match="folds per task"):
        fold(more)
