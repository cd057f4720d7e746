"""The base-weight fingerprint an adapter records, and `smora eval`'s warning when an adapter is
scored on other weights of the same architecture."""

import torch
from transformers import AutoModelForCausalLM

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.fingerprint import base_fingerprint, recorded_fingerprint
from smora_cli.adapters.inject import attach
from smora_cli.adapters.io import WEIGHTS_NAME, save_adapter
from smora_cli.evaluation.job import EvalRequest, run_eval
from tests.fixtures import glue_folder

CONFIG = AdapterConfig(method="smora", r=4, k=2, target_modules=["q_proj", "v_proj"])


def adapted(model_dir, **kwargs):
    return attach(AutoModelForCausalLM.from_pretrained(model_dir, **kwargs), CONFIG)


def other_weights(decoder_dir, out):
    """The same architecture with one adapted weight nudged: a stand-in for a fine-tune."""
    model = AutoModelForCausalLM.from_pretrained(decoder_dir)
    with torch.no_grad():
        model.model.layers[1].self_attn.v_proj.weight.add_(0.01)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((decoder_dir / name).read_bytes())
    return out


def test_fingerprint_is_recorded_and_follows_the_weights_not_their_dtype(tmp_path, decoder_dir):
    model = adapted(decoder_dir)
    save_adapter(model, tmp_path / "adapter")
    recorded = recorded_fingerprint(tmp_path / "adapter" / WEIGHTS_NAME)
    assert recorded == base_fingerprint(model) and len(recorded) == 16
    assert base_fingerprint(adapted(decoder_dir, dtype=torch.bfloat16)) == recorded
    other = other_weights(decoder_dir, tmp_path / "other")
    assert base_fingerprint(adapted(other)) != recorded
    # The adapter's own weights do not enter it: training leaves the fingerprint unchanged.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(1.0)
    assert base_fingerprint(model) == recorded


def test_eval_warns_when_the_adapter_meets_other_base_weights(tmp_path, decoder_dir):
    save_adapter(adapted(decoder_dir), tmp_path / "adapter")
    other = other_weights(decoder_dir, tmp_path / "other")
    data_dir = glue_folder(tmp_path / "glue", n=4)

    def said(model):
        lines = []
        request = EvalRequest(
            tasks=["sst2"],
            data_dir=data_dir,
            model=str(model),
            adapter=tmp_path / "adapter",
            kind="causal-lm",
            output_path=tmp_path / f"{model.name}.json",
        )
        run_eval(request, echo=lines.append)
        return [line for line in lines if line.startswith("warning:")]

    assert said(decoder_dir) == []
    (warning,) = said(other)
    assert f"adapter {tmp_path / 'adapter'} was trained on other base weights" in warning
    assert str(other) in warning
