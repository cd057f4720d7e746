"""Smoke test of scripts/bench_adapters.py: tiny shapes, one round, the JSON structure."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_adapters.py"
TINY = [
    "--quick",
    "--tokens",
    "32",
    "--dim",
    "32",
    "--batch",
    "4",
    "--model-layers",
    "1",
    "--model-dim",
    "64",
    "--model-seq",
    "8",
    "--model-batch",
    "2",
    "--repeats",
    "1",
    "--iters",
    "1",
    "--warmup",
    "1",
    "--eval-examples",
    "3",
    "--eval-labels",
    "2",
    "--lm-target",
    "2",
]
RESULT_KEYS = {
    "method",
    "level",
    "r",
    "k",
    "train_ratio",
    "forward_ratio",
    "peak_mem_ratio",
    "flop_ratio",
    "train_ms",
    "forward_ms",
}


def load_script():
    spec = importlib.util.spec_from_file_location("bench_adapters", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_ratios_against_lora(tmp_path, capsys):
    out = tmp_path / "bench.json"
    document = load_script().main([*TINY, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(document))
    assert set(document) == {"meta", "results"}
    assert {"versions", "shapes", "device", "dtype", "threads"} <= set(document["meta"])
    assert {"torch", "transformers", "peft", "smora"} <= set(document["meta"]["versions"])
    rows = {(row["method"], row["level"], row["r"]): row for row in document["results"]}
    assert all(set(row) == RESULT_KEYS for row in rows.values())
    for level in ("layer", "model"):
        for method, r in (
            ("lora", 64),
            ("smora", 64),
            ("moe-lora", 64),
            ("more", 64),
            ("hydra", 64),
            ("lora", 32),
            ("flylora", 32),
        ):
            row = rows[(method, level, r)]
            assert row["train_ms"] > 0 and row["train_ratio"] > 0 and row["peak_mem_ratio"] > 0
            assert row["flop_ratio"] > 0
        assert rows[("lora", level, 64)]["train_ratio"] == 1.0
        # A router adds matmuls; FlyLoRA's frozen A skips its weight and input gradients.
        assert rows[("smora", level, 64)]["flop_ratio"] > 1.0
        assert rows[("flylora", level, 32)]["flop_ratio"] < 1.0
    assert rows[("loop-moe", "layer", 64)]["forward_ratio"] > 0
    assert rows[("gather-moe", "layer", 64)]["train_ratio"] > 0
    assert rows[("peft-lora", "model", 64)]["train_ratio"] > 0
    assert rows[("folded-lora", "model", 64)]["forward_ratio"] > 0
    assert rows[("folded-lora", "model", 64)]["train_ms"] is None
    assert rows[("folded-more", "model", 64)]["forward_ratio"] > 0
    assert rows[("folded-more", "model", 64)]["flop_ratio"] == 1.0  # the base model's matmuls
    assert rows[("rankcls", "eval", 64)]["forward_ratio"] == 1.0
    assert rows[("rankcls-loop", "eval", 64)]["forward_ratio"] > 0
    # Pairs recompute every prompt once per label: more matmul FLOPs than the shared prompt.
    assert rows[("rankcls-pairs", "eval", 64)]["flop_ratio"] > 1.0
    assert rows[("lm-full-logits", "lm", 64)]["train_ratio"] == 1.0
    # The vocabulary projection of the target window only: fewer FLOPs, less memory.
    assert rows[("lm-window", "lm", 64)]["flop_ratio"] < 1.0
    assert rows[("lm-window", "lm", 64)]["peak_mem_ratio"] < 1.0
    printed = capsys.readouterr().out
    assert "train x" in printed and "rankcls: " in printed and "examples/s" in printed


def test_methods_filter_keeps_the_lora_baseline():
    document = load_script().main([*TINY, "--level", "layer", "--methods", "smora"])
    methods = {row["method"] for row in document["results"]}
    assert methods == {"base", "lora", "smora"}
