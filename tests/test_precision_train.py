"""bf16 end to end: `smora train` under autocast and on bf16 weights trains, resumes to the
uninterrupted result, evaluates; a bf16 base folds and merges."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from smora_cli.adapters import AdapterConfig, attach, save_adapter
from smora_cli.merging.config import merge_config_from_dict
from smora_cli.merging.run import run_merge
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import Trainer, run
from tests import tiny_models as tm
from tests.test_train_lm import lm_recipe

PRECISIONS = {
    "autocast-bf16": {"train.mixed_precision": "bf16"},
    "bf16-weights": {"model.dtype": "bfloat16"},
}


def _recipe(decoder_dir, tmp_path, precision: str, method: dict, out: str, steps: int):
    data = lm_recipe(decoder_dir, tmp_path, "causal-lm", method)
    overrides = [f"{key}={value}" for key, value in PRECISIONS[precision].items()]
    overrides += [f"train.output_dir={tmp_path / out}", f"train.max_steps={steps}"]
    return recipe_from_dict(data, overrides)


def _adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


METHODS = {
    "lora": {"method": "lora", "r": 4},
    "moe-lora": {"method": "moe-lora", "r": 8, "k": 4, "expert_rank": 2},
    "smora": {"method": "smora", "r": 8, "k": 2},
    "smora-h-gate": {"method": "smora", "r": 8, "k": 2, "gate_uses_bias": False},
    "flylora": {"method": "flylora", "r": 8, "k": 2},
    "more": {"method": "more", "r": 4},
    "hydra": {"method": "hydra", "r": 4},
}
# Every method under autocast; the bf16-weights path differs only below the adapter (the base
# runs in bf16, the adapter input is cast up), so two methods cover it end to end.
CASES = [("autocast-bf16", name) for name in METHODS] + [
    ("bf16-weights", "smora"),
    ("bf16-weights", "more"),
]


@pytest.mark.parametrize("precision,name", CASES)
def test_bf16_training_resumes_to_the_uninterrupted_adapter(
    tmp_path, decoder_dir, precision, name, monkeypatch
):
    method = METHODS[name]
    quiet = {"show_progress": False, "echo": lambda *_: None}
    whole = run(_recipe(decoder_dir, tmp_path, precision, method, "whole", 4), **quiet)
    original = Trainer._optimizer_step

    def interrupted_step(self, step):
        stats = original(self, step)
        if step == 1 and not self.resume:  # SIGTERM during the second step
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted_step)
    cut = run(_recipe(decoder_dir, tmp_path, precision, method, "split", 4), **quiet)
    assert (cut.status, cut.step) == ("interrupted", 2)
    resumed = run(
        _recipe(decoder_dir, tmp_path, precision, method, "split", 4), resume=True, **quiet
    )

    assert whole.eval is not None and resumed.eval is not None
    expected, got = _adapter(tmp_path / "whole"), _adapter(tmp_path / "split")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert tensor.dtype == torch.float32  # adapters stay float32 on a bf16 base
        assert torch.isfinite(tensor).all()
        assert torch.equal(got[name], tensor), name
    assert any(t.abs().sum() > 0 for n, t in expected.items() if "lora_B" in n)


def test_lora_on_a_bf16_base_folds_to_the_adapter_model(tmp_path):
    base = tm.llama().to(torch.bfloat16)
    base.save_pretrained(tmp_path / "base")
    model = attach(tm.llama().to(torch.bfloat16), AdapterConfig(method="lora", r=4))
    tm.randomize_adapter(model, std=0.05)
    save_adapter(model, tmp_path / "lora")
    batch = tm.inputs()
    expected = model(**batch).logits.float()

    config = {
        "base_model": str(tmp_path / "base"),
        "merge_method": "fold",
        "models": [{"adapter": str(tmp_path / "lora")}],
        "dtype": "bfloat16",
    }
    out = run_merge(merge_config_from_dict(config), tmp_path / "folded", echo=lambda *_: None)
    folded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert folded.dtype == torch.bfloat16
    logits = folded(**batch).logits.float()
    # One bf16 rounding of W0 + dW against bf16 W0 plus a float32 adapter branch.
    assert (logits - expected).norm() / expected.norm() < 0.02
