"""`accelerate launch` with two CPU processes (gloo) trains the same adapter as one process
with the same global batch, and its gathered evaluation scores every example once."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.fixtures import classifier_recipe


def test_two_processes_equal_one(tmp_path, encoder_dir):
    # Gradient accumulation too: each rank's expert counts must survive both micro-batches.
    one = classifier_recipe(
        encoder_dir,
        tmp_path / "data",
        tmp_path / "one",
        batch_size=4,
        grad_accum=2,
        max_steps=4,
        save_steps=2,
    )
    one["adapter"]["balance_rate"] = 0.01
    run(recipe_from_dict(one), show_progress=False, echo=lambda *_: None)
    two = json.loads(json.dumps(one))
    two["train"].update(output_dir=str(tmp_path / "two"), batch_size=2)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    done = subprocess.run(
        [
            launcher,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "smora_cli",
            "train",
            str(tmp_path / "two.yaml"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("adapter written to") == 1, "only the main process reports"
    assert done.stdout.count("run directory:") == 1 and done.stdout.count("average") == 1

    expected = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    got = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    biases = [k for k in expected if k.endswith("balance_bias")]
    assert biases and any(torch.count_nonzero(expected[k]) for k in biases)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    # Logged losses are the whole job's, not rank 0's (were: rank 0's, equal to one process's
    # only by accident of the batch split).
    logs = {
        name: [
            json.loads(line)
            for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        for name in ("one", "two")
    }
    assert [e["step"] for e in logs["two"]] == [e["step"] for e in logs["one"]] == [2, 4]
    for single, double in zip(logs["one"], logs["two"], strict=True):
        assert double["loss"] == pytest.approx(single["loss"], rel=1e-4)
        assert double["task_loss"].keys() == single["task_loss"].keys()
        for task, value in single["task_loss"].items():
            assert double["task_loss"][task] == pytest.approx(value, rel=1e-4)
    report_one = json.loads((tmp_path / "one" / "eval_validation.json").read_text())
    report_two = json.loads((tmp_path / "two" / "eval_validation.json").read_text())
    assert report_two["n-samples"] == report_one["n-samples"]
    assert report_two["config"]["num_processes"] == 2
    for task, result in report_one["results"].items():
        for metric, value in result.items():
            if metric != "alias":
                assert report_two["results"][task][metric] == pytest.approx(value, abs=1e-3)
