"""FSDP (issue 16): an adapter trained on a sharded model is written whole, under the names a
plain model uses, and loads back into a sharded model to resume training exactly.

Two real gloo processes (torchrun) run tests/fsdp_worker.py (torch's FSDP1 and FSDP2 on the
CPU, through smora's functions) and tests/fsdp_train_worker.py (`smora train` under
Accelerate's FSDP2); this process trains the same adapters unsharded and checks what they wrote.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from smora_cli.adapters.io import WEIGHTS_NAME, adapter_state_dict, load_adapter
from smora_cli.models import HEADS_WEIGHTS
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.fixtures import classifier_recipe
from tests.fsdp_worker import STEPS, batch, optimizer, plain_model, train_step
from tests.tiny_models import llama

REPO = Path(__file__).resolve().parents[1]


def _torchrun(module: str, *args) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", module]
        + [str(arg) for arg in args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_fsdp_adapter_is_written_whole_and_resumes(tmp_path):
    _torchrun("tests.fsdp_worker", tmp_path)

    # The unwrapped model, trained in one process on the whole batch both ranks shared.
    plain = plain_model()
    opt = optimizer(plain)
    for _ in range(STEPS):
        train_step(plain, opt, batch())
    expected = adapter_state_dict(plain)
    with torch.no_grad():
        expected_logits = plain(input_ids=batch()).logits

    for version in (1, 2):
        out = tmp_path / f"fsdp{version}"
        saved = load_file(out / "adapter" / WEIGHTS_NAME)
        # (a) whole tensors under the unwrapped model's names, trained as the plain run.
        assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in expected.items()}
        for key in expected:
            torch.testing.assert_close(saved[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)
        assert "_fsdp" not in (out / "adapter" / "adapter_config.json").read_text()

        # (b) a plain process loads it and gives the outputs of the unwrapped and sharded models.
        loaded = load_adapter(llama(seed=0), out / "adapter")
        with torch.no_grad():
            logits = loaded(input_ids=batch()).logits
        torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-5)
        sharded_logits = load_file(out / "logits.safetensors")["logits"]
        torch.testing.assert_close(logits, sharded_logits, rtol=1e-5, atol=1e-6)

        # (c) loaded back into a sharded model with its optimizer state, one more step gives
        # bit for bit what the model that never stopped gives.
        continued = load_file(out / "continued" / WEIGHTS_NAME)
        resumed = load_file(out / "resumed" / WEIGHTS_NAME)
        assert resumed.keys() == continued.keys() == saved.keys()
        for key in continued:
            assert torch.equal(resumed[key], continued[key]), key
        assert any(not torch.equal(continued[k], saved[k]) for k in saved), "the step changed it"

        # A sharded model's adapter is never read from one rank's slices.
        assert "root=" in (out / "refused.txt").read_text()


def test_smora_train_under_accelerate_fsdp2(tmp_path, encoder_dir):
    recipe = classifier_recipe(
        encoder_dir, tmp_path / "data", tmp_path / "fsdp", batch_size=2, max_steps=4, save_steps=2
    )
    recipe["eval"]["at_end"] = False
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    _torchrun("tests.fsdp_train_worker", tmp_path / "recipe.json", tmp_path / "resumed")

    # Checkpoints hold the adapter, heads, optimizer and RNG states: never the base model.
    checkpoint = {p.name for p in (tmp_path / "fsdp" / "checkpoints" / "step-2").iterdir()}
    assert checkpoint == {
        "adapter_config.json",
        WEIGHTS_NAME,
        "task_heads.json",
        HEADS_WEIGHTS,
        "optimizer.bin",
        "random_states_0.pkl",
        "random_states_1.pkl",
        "trainer_state.json",
    }

    # One process with the same global batch trains the same adapter and heads; the run
    # resumed from step 2 ends with exactly the uninterrupted run's.
    recipe["train"].update(output_dir=str(tmp_path / "plain"), batch_size=4)
    run(recipe_from_dict(recipe), show_progress=False, echo=lambda *_: None)
    for name in (WEIGHTS_NAME, HEADS_WEIGHTS):
        sharded = load_file(tmp_path / "fsdp" / "adapter" / name)
        resumed = load_file(tmp_path / "resumed" / "adapter" / name)
        plain = load_file(tmp_path / "plain" / "adapter" / name)
        assert sharded.keys() == resumed.keys() == plain.keys()
        for key in plain:
            assert torch.equal(resumed[key], sharded[key]), key
            torch.testing.assert_close(sharded[key], plain[key], rtol=1e-4, atol=1e-6, msg=key)
