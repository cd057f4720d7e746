"""Adapter files: exact round trips for every method, PEFT interoperability, clear refusals."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from smora_cli.adapters import (
    AdapterConfig,
    adapter_layers,
    attach,
    load_adapter,
    on_optimizer_step,
    read_adapter_config,
    routing_context,
    save_adapter,
)
from smora_cli.adapters.io import saved_rank_map
from smora_cli.adapters.state import rank_map
from smora_cli.errors import AdapterError
from tests import tiny_models as tm

METHOD_CASES = {
    "lora": dict(method="lora", r=4),
    "moe-lora": dict(method="moe-lora", r=8, k=4, expert_rank=2),
    "smora": dict(method="smora", r=8, k=2),
    "flylora": dict(method="flylora", r=8, k=2, a_seed=7),
    "more": dict(method="more", r=4, task_names=["a", "b", "c"]),
    "hydra": dict(method="hydra", r=4, num_experts=3),
}


def run(model, batch, task_ids=torch.tensor([0, 2, 1])):
    with routing_context(model, task_ids=task_ids, token_masks=batch["attention_mask"]):
        return tm.forward(model, batch)


@pytest.mark.parametrize("method", sorted(METHOD_CASES))
@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_roundtrip_bit_identical(tmp_path, method, arch):
    build = tm.llama if arch == "llama" else tm.t5
    model = attach(build(), AdapterConfig(**METHOD_CASES[method]))
    tm.randomize_adapter(model)
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            for param in layer.router.parameters():
                param.normal_()
    batch = tm.inputs()
    expected = run(model, batch)
    save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"
    reloaded = load_adapter(build(), tmp_path / "adapter")
    assert torch.equal(run(reloaded, batch), expected)
    assert not any(p.requires_grad for p in reloaded.parameters())
    trainable = load_adapter(build(), tmp_path / "adapter", trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_balance_state_survives_reload(tmp_path):
    model = attach(tm.llama(), AdapterConfig(method="flylora", r=8, k=2))
    model.train()
    tm.forward(model, tm.inputs())
    on_optimizer_step(model)
    biases = {p: layer.router.balance_bias.clone() for p, layer in adapter_layers(model)}
    assert any(torch.count_nonzero(b) for b in biases.values())
    save_adapter(model, tmp_path / "a")
    reloaded = load_adapter(tm.llama(), tmp_path / "a")
    for path, layer in adapter_layers(reloaded):
        assert torch.equal(layer.router.balance_bias, biases[path])


def test_saved_rank_map_is_the_live_models(tmp_path):
    model = attach(tm.llama(), AdapterConfig(method="more", r=8, task_names=["a", "b", "c"]))
    with torch.no_grad():  # random selectors: every task and layer picks its own rank
        for _, layer in adapter_layers(model):
            for param in layer.router.parameters():
                param.normal_(std=3.0)
    expected = rank_map(model)
    assert len({rank for ranks in expected.values() for rank in ranks.values()}) > 2
    save_adapter(model, tmp_path / "more")
    assert saved_rank_map(tmp_path / "more") == expected
    save_adapter(attach(tm.llama(), AdapterConfig(method="lora", r=4)), tmp_path / "lora")
    with pytest.raises(AdapterError, match="only 'more' learns ranks"):
        saved_rank_map(tmp_path / "lora")


def test_file_format_is_peft_keyed(tmp_path):
    model = attach(
        tm.llama(layers=1), AdapterConfig(method="smora", r=8, k=2, target_modules=["q_proj"])
    )
    save_adapter(model, tmp_path / "a")
    keys = sorted(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj."
    assert keys == [
        prefix + k
        for k in ("lora_A.weight", "lora_B.weight", "router.balance_bias", "router.gate.weight")
    ]
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "SMORA" and config["method"] == "smora"
    assert config["r"] == 8 and config["k"] == 2 and config["lora_alpha"] == 16
    assert config["target_modules"] == ["model.layers.0.self_attn.q_proj"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_smora_lora_loads_in_peft(tmp_path, arch):
    build = tm.llama if arch == "llama" else tm.gpt2
    model = attach(build(), AdapterConfig(method="lora", r=4, alpha=8, use_rslora=True))
    tm.randomize_adapter(model)
    batch = tm.inputs()
    expected = tm.forward(model, batch)
    save_adapter(model, tmp_path / "a")
    peft_model = PeftModel.from_pretrained(build(), tmp_path / "a")
    torch.testing.assert_close(peft_model(**batch).logits, expected)


@pytest.mark.parametrize(
    "arch,auto,task_type",
    [
        ("llama", "AutoPeftModelForCausalLM", "CAUSAL_LM"),
        ("t5", "AutoPeftModelForSeq2SeqLM", "SEQ_2_SEQ_LM"),
    ],
)
def test_lora_adapter_loads_with_auto_peft_model(tmp_path, arch, auto, task_type):
    import peft

    build = getattr(tm, arch)
    build().save_pretrained(tmp_path / "base")
    config = AdapterConfig(method="lora", r=4, base_model_name_or_path=str(tmp_path / "base"))
    model = attach(build(), config)
    tm.randomize_adapter(model)
    batch = tm.inputs()
    if arch == "t5":
        batch["decoder_input_ids"] = batch["input_ids"][:, :4]
    expected = model(**batch).logits
    save_adapter(model, tmp_path / "a")
    written = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert written["task_type"] == task_type and written["peft_version"] == peft.__version__
    loaded = getattr(peft, auto).from_pretrained(tmp_path / "a").eval()
    torch.testing.assert_close(loaded(**batch).logits, expected)


def test_peft_lora_loads_in_smora(tmp_path):
    peft_model = get_peft_model(
        tm.llama(),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    batch = tm.inputs()
    expected = peft_model(**batch).logits
    peft_model.save_pretrained(tmp_path / "p")
    ours = load_adapter(tm.llama(), tmp_path / "p")
    torch.testing.assert_close(tm.forward(ours, batch), expected)


def test_peft_features_smora_lacks_are_refused(tmp_path):
    peft_model = get_peft_model(
        tm.llama(), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)
    )
    peft_model.save_pretrained(tmp_path / "dora")
    with pytest.raises(ValueError, match="use_dora=True is not supported"):
        load_adapter(tm.llama(), tmp_path / "dora")


def test_bad_adapter_directories(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_adapter_config(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not an adapter directory"):
        read_adapter_config(tmp_path / "empty")
    model = attach(tm.llama(), AdapterConfig(method="smora", r=4, k=2))
    save_adapter(model, tmp_path / "good")

    def broken(name, edit):
        target = tmp_path / name
        save_adapter(model, target)
        edit(target)
        return target

    bad_json = broken("json", lambda d: (d / "adapter_config.json").write_text("{not json"))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_adapter(tm.llama(), bad_json)

    def set_key(key, value):
        def edit(d):
            data = json.loads((d / "adapter_config.json").read_text())
            data[key] = value
            (d / "adapter_config.json").write_text(json.dumps(data))

        return edit

    with pytest.raises(ValueError, match="peft_type 'IA3'"):
        load_adapter(tm.llama(), broken("ia3", set_key("peft_type", "IA3")))
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        load_adapter(tm.llama(), broken("magic", set_key("method", "magic")))
    with pytest.raises(ValueError, match="must be at most r"):
        load_adapter(tm.llama(), broken("k", set_key("k", 99)))
    with pytest.raises(ValueError, match="unknown adapter config keys"):
        load_adapter(tm.llama(), broken("extra", set_key("frobnicate", 1)))

    def truncate(d):
        path = d / "adapter_model.safetensors"
        path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ValueError, match="corrupt or unreadable"):
        load_adapter(tm.llama(), broken("trunc", truncate))


def test_adapter_from_another_base_model_is_refused(tmp_path):
    model = attach(tm.llama(), AdapterConfig(method="lora", r=4))
    save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_adapter(tm.gpt2(), tmp_path / "a")
    wider = tm.llama()
    config = wider.config
    config.hidden_size, config.intermediate_size = 48, 64
    from transformers import LlamaForCausalLM

    with pytest.raises(ValueError, match="different base model"):
        load_adapter(LlamaForCausalLM(config), tmp_path / "a")


def test_save_over_existing_adapter_replaces_it(tmp_path):
    first = attach(tm.llama(), AdapterConfig(method="lora", r=4))
    save_adapter(first, tmp_path / "a")
    second = attach(tm.llama(), AdapterConfig(method="smora", r=4, k=2))
    save_adapter(second, tmp_path / "a")
    assert read_adapter_config(tmp_path / "a").method == "smora"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
