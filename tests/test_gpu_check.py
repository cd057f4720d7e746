"""scripts/gpu_check.sh: its CPU dry run end to end (a representative subset), and the pieces
the GPU run depends on: comparisons, the kernel decision, the GPU plan's recipes and flags."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smora_cli.bench import check_plan as cp
from smora_cli.bench import gpu_check, wheels
from smora_cli.bench.compare import loss_agreement, tensor_agreement
from smora_cli.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_dry_run_trains_every_precision_resumes_and_launches_the_configs(tmp_path):
    # The full dry run (7 variants, the bench, the compiled bench) takes ~2.5 min on 2 busy
    # cores; this subset runs every kind of step: in-process smora train/eval/merge, resume,
    # and accelerate launches of the shipped configs.
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--dry-run",
            "--variants",
            "lora",
            "--sections",
            "train,distributed",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert doc["status"] == {
        "ok": True,
        "failures": [],
        "skipped": [{"step": "accelerate zero2", "why": doc["status"]["skipped"][0]["why"]}],
    }
    assert "$ smora train" in log and "gpu check: passed" in log

    runs = {r["precision"]: r for r in doc["train"]["runs"]}
    assert set(runs) == set(cp.PRECISIONS)
    for run in runs.values():
        assert run["exit_code"] == 0 and len(run["losses"]) == cp.Plan.cpu().steps
        assert all(math.isfinite(loss) for loss in run["losses"])
    for comparison in doc["train"]["bf16_vs_float32"]:
        # bf16 really ran (the losses differ) and stayed within the stated tolerance.
        assert 0 < comparison["max_rel_diff"] <= cp.BF16_LOSS_RTOL and comparison["ok"]
    (resume,) = doc["train"]["resume"]
    assert resume["exit_code"] == 0
    assert resume["adapter"]["max_rel_diff"] == 0.0  # bitwise on a CPU
    assert resume["losses_after_resume"]["ok"]
    assert doc["train"]["eval"]["exit_code"] == 0
    assert set(doc["train"]["eval"]["results"]) == {"sentiment", "topic"}
    assert doc["train"]["merge"]["config_written"]

    distributed = doc["distributed"]
    for name in ("ddp", "fsdp"):
        assert distributed[name]["exit_code"] == 0
        assert distributed[name]["losses"]["ok"] and distributed[name]["adapter_loads"]["ok"]
    assert "skipped" in distributed["zero2"]


def test_bad_flags_are_one_line_and_exit_2(capsys, tmp_path):
    assert gpu_check.main(["--dry-run", "--sections", "train,nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown sections/variants ['nope']")
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", str(tmp_path)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.parametrize("plan", [cp.Plan.gpu(), cp.Plan.cpu()], ids=["gpu", "cpu"])
def test_every_variant_is_a_valid_recipe(plan, tmp_path):
    tasks = cp.write_tasks(tmp_path / "data", examples=8)
    recipes = {}
    for variant in cp.VARIANTS:
        data = cp.recipe(plan, tmp_path, tasks, variant, tmp_path / "run")
        overrides = [f"{k}={v}" for k, v in cp.PRECISIONS["bf16-weights"].items()]
        recipes[variant] = recipe_from_dict(data, overrides)
    assert (
        recipes["smora"].adapter.gate_uses_bias
        and not recipes["smora-gate-h"].adapter.gate_uses_bias
    )
    assert recipes["moe-lora"].adapter.active_experts == 2  # top-2 of r / expert_rank experts
    assert (
        recipes["lora"].model.dtype == "bfloat16" and recipes["lora"].train.max_steps == plan.steps
    )


@pytest.mark.parametrize("plan", [cp.Plan.gpu(), cp.Plan.cpu()], ids=["gpu", "cpu"])
def test_the_bench_flags_of_each_plan_parse(plan, tmp_path):
    script = ROOT / "scripts" / "bench_adapters.py"
    spec = importlib.util.spec_from_file_location("bench_adapters", script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "config-compile.json").write_text("{}")
    device = ["--device", "cpu", "--dtype", "bfloat16"]
    eager = bench.parse_args([*device, *gpu_check.eager_bench_flags(plan, tmp_path)])
    assert eager.profile and eager.level == ["layer", "model"]
    compiled = bench.parse_args([*device, *gpu_check.compile_bench_flags(plan, tmp_path, True)])
    assert compiled.compile and compiled.compile_backend == plan.compile_backend
    if plan.name == "gpu":
        assert eager.dim == 4096 and eager.methods[0] == "lora"


def test_loss_agreement_is_the_largest_relative_difference():
    reference = {1: 10.0, 2: 9.0, 3: 8.0}
    result = loss_agreement(reference, {1: 10.1, 2: 9.0, 3: 8.4}, rtol=0.06)
    assert result["max_rel_diff"] == pytest.approx(0.05) and result["at_step"] == 3
    assert result["ok"]
    assert not loss_agreement(reference, {1: 10.0, 2: 9.0, 3: 8.6}, rtol=0.06)["ok"]
    missing = loss_agreement(reference, {1: 10.0, 2: 9.0}, rtol=0.06)
    assert missing["missing_steps"] == [3] and not missing["ok"]
    nan = loss_agreement(reference, {1: float("nan"), 2: 9.0, 3: 8.0}, rtol=0.06)
    assert not nan["ok"] and nan["max_rel_diff"] is None


def test_tensor_agreement_names_the_worst_tensor_and_key_differences():
    a = {"x": torch.tensor([3.0, 4.0]), "y": torch.ones(3)}
    b = {"x": torch.tensor([3.0, 4.5]), "y": torch.ones(3)}
    result = tensor_agreement(a, b, rtol=0.2)
    assert result["worst_tensor"] == "x" and result["max_rel_diff"] == pytest.approx(0.1)
    assert result["ok"] and not tensor_agreement(a, b, rtol=0.05)["ok"]
    renamed = {"_fsdp_wrapped_module.x": b["x"], "y": b["y"]}
    assert "different tensors" in tensor_agreement(a, renamed, rtol=1)["problem"]
    reshaped = {"x": torch.zeros(1, 2), "y": b["y"]}
    assert "shape" in tensor_agreement(a, reshaped, rtol=1)["problem"]


def _bench_row(method, r, train_ratio, flop_ratio):
    return {
        "method": method,
        "level": "model",
        "r": r,
        "train_ratio": train_ratio,
        "flop_ratio": flop_ratio,
    }


def test_kernel_decision_needs_a_missed_target_and_routing_time():
    document = {
        "results": [
            _bench_row("lora", 64, 1.0, 1.0),
            _bench_row("smora", 64, 1.12, 1.06),  # over 1.05, routing +8 points: kernel
            _bench_row("moe-lora", 64, 1.12, 1.01),  # over, but routing only +2 points
            _bench_row("more", 64, 1.03, 1.0),  # within its target
            _bench_row("flylora", 32, 1.02, 0.94),  # over 1.00, routing +6 points: kernel
        ],
        "profile": {
            "model/smora/64": {"routing_share": 0.10, "routing_excess": 0.08},
            "model/moe-lora/64": {"routing_share": 0.04, "routing_excess": 0.02},
            "model/more/64": {"routing_share": 0.30, "routing_excess": 0.28},
            "model/flylora/32": {"routing_share": 0.07, "routing_excess": 0.06},
        },
    }
    decisions = {d["method"]: d["decision"] for d in gpu_check.kernel_decisions(document)}
    assert decisions == {
        "smora": "write a fused routing kernel",
        "moe-lora": "no kernel",
        "more": "no kernel",
        "flylora": "write a fused routing kernel",
    }


def test_compile_speedup_is_eager_over_compiled_time():
    eager = {"results": [{"method": "smora", "r": 64, "train_ms": 30.0}]}
    eager["results"].append({"method": "base", "r": None, "train_ms": None})
    compiled_row = {"method": "smora", "r": 64, "train_ms": 20.0, "train_ratio": 1.02}
    compiled = {"results": [{**compiled_row, "compile_s": 40.0}]}
    (row,) = gpu_check.compile_speedups(eager, compiled)
    assert row["train_speedup"] == 1.5 and row["compile_s"] == 40.0


def test_requirement_problems_name_missing_and_out_of_range_packages(monkeypatch):
    versions = {"carried": "1.0", "numpy": "2.0.0"}

    def version(name):
        if name not in versions:
            raise wheels.metadata.PackageNotFoundError(name)
        return versions[name]

    requires = {"carried": ["numpy<2", "absent-package>=1", "pytest; extra == 'test'"]}
    monkeypatch.setattr(wheels.metadata, "version", version)
    monkeypatch.setattr(wheels.metadata, "requires", lambda name: requires[name])
    assert wheels.requirement_problems(["carried"]) == [
        "carried needs numpy<2, found numpy 2.0.0",
        "carried needs absent-package>=1, which is not installed",
    ]
