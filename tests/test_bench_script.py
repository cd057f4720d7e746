"""Smoke test of scripts/bench_adapters.py: tiny shapes, one round, the JSON structure."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_adapters.py"
TINY_ARGS = [
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
    "flops",
    "tokens_per_s",
    "compile_s",
}
REAL = ["--repeats", "1", "--warmup", "1", "--model-iters", "1", "--real-batch", "2"]
REAL += ["--real-seq", "16", "--real-target", "4"]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_adapters", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_ratios_against_lora(tmp_path, capsys):
    out = tmp_path / "bench.json"
    document = load_script().main([*TINY_ARGS, "--json", str(out)])
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
    document = load_script().main([*TINY_ARGS, "--level", "layer", "--methods", "smora"])
    methods = {row["method"] for row in document["results"]}
    assert methods == {"base", "lora", "smora"}


def test_real_level_times_every_method_under_both_losses(tmp_path, capsys):
    from smora_cli.bench.check_plan import corpus
    from smora_cli.bench.llama import TINY, write_random_llama

    spec = {**TINY, "num_hidden_layers": 1}
    decoder = write_random_llama(tmp_path / "decoder", spec, corpus(16))
    methods = ["--methods", "smora,flylora", "--profile"]
    document = load_script().main(["--level", "real", "--model", str(decoder), *REAL, *methods])
    rows = {(row["method"], row["level"]): row for row in document["results"]}
    assert set(rows) == {
        (method, level)
        for method in ("lora", "smora", "flylora")
        for level in ("real", "real-full")
    }
    for row in rows.values():
        assert set(row) == RESULT_KEYS and row["r"] == 32
        assert row["train_ms"] > 0 and row["forward_ms"] > 0 and row["peak_mem_ratio"] > 0
        # Both figures are rounded (train_ms to 1 us, the rate to 0.1): the tolerance is what
        # rounding a few-millisecond step can move the rate by.
        rate = 2 * 16 / (row["train_ms"] / 1e3)
        assert row["tokens_per_s"] == pytest.approx(
            rate, abs=0.05 + rate * 0.0005 / row["train_ms"]
        )
    for level in ("real", "real-full"):
        assert rows[("lora", level)]["train_ratio"] == 1.0
        assert rows[("smora", level)]["flop_ratio"] > 1.0  # the router's matmuls
        assert rows[("flylora", level)]["flop_ratio"] < 1.0  # frozen A: no A gradients
    # The target window computes vocabulary logits (forward and input gradient; the head is
    # frozen) at target + 1 positions instead of all 16: exactly this many fewer FLOPs.
    dim, vocab = TINY["hidden_size"], TINY["vocab_size"]
    saved = 2 * (16 - 4 - 1) * 4 * dim * vocab
    for method in ("lora", "smora", "flylora"):
        full, window = rows[(method, "real-full")]["flops"], rows[(method, "real")]["flops"]
        assert full - window == saved, method
    profile = document["profile"]
    assert set(profile) == {f"{level}/{m}/32" for m, level in rows}
    assert profile["real/lora/32"]["routing_excess"] == 0.0
    # smora's sigmoid, top-k and scatter are routing ops LoRA does not run.
    assert profile["real/smora/32"]["routing_excess"] > 0
    for summary in profile.values():
        assert 0 < summary["gemm_share"] <= 1
        times = [op["self_ms"] for op in summary["top_ops"]]
        assert times == sorted(times, reverse=True) and times[0] > 0
    printed = capsys.readouterr().out
    assert "=== real/smora/32: top ops" in printed and "routing %" in printed


def test_model_level_builds_the_llama_of_a_config_file(tmp_path):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    from smora_cli.bench.llama import TINY, write_config

    config = write_config(tmp_path / "config.json", {**TINY, "num_hidden_layers": 1})
    flags = ["--level", "model", "--model-config", str(config), "--methods", "smora"]
    document = load_script().main([*TINY_ARGS, *flags])
    assert document["meta"]["shapes"]["model_config"] == str(config)
    rows = {(row["method"], row["r"]): row for row in document["results"]}
    assert rows[("smora", 64)]["train_ratio"] > 0 and rows[("smora", 64)]["flop_ratio"] > 1
    # Its forward FLOPs are those of a Llama built from the file (GQA, vocabulary 512).
    model = LlamaForCausalLM(LlamaConfig.from_json_file(str(config)))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.zeros(2, 8, dtype=torch.long), use_cache=False)
    assert rows[("base", None)]["flops"] == counter.get_total_flops() > 0


def test_compile_times_the_first_call_of_every_case():
    flags = ["--level", "layer", "--methods", "smora", "--compile", "--compile-backend", "eager"]
    document = load_script().main([*TINY_ARGS, *flags])
    assert document["meta"]["shapes"]["compile"] == "eager"
    rows = {(row["method"], row["r"]): row for row in document["results"]}
    assert set(rows) == {("base", None), ("lora", 64), ("smora", 64), ("lora", 32)}
    for row in rows.values():
        assert row["compile_s"] is not None and row["forward_ms"] > 0
    # Tracing smora's layer (the first call) takes longer than a compiled step.
    assert rows[("smora", 64)]["compile_s"] > rows[("smora", 64)]["train_ms"] / 1e3


def test_bad_model_config_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(["--model-config", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2
    assert "--model-config" in capsys.readouterr().err


def test_real_level_times_more_with_and_without_sharing_between_siblings(tmp_path):
    from smora_cli.bench.check_plan import corpus
    from smora_cli.bench.llama import TINY, write_random_llama

    decoder = write_random_llama(tmp_path / "decoder", {**TINY, "num_hidden_layers": 1}, corpus(16))
    methods = ["--methods", "more,more-unshared", "--level", "real", "--model", str(decoder)]
    document = load_script().main([*methods, *REAL])
    rows = {(row["method"], row["level"]): row for row in document["results"]}
    assert {method for method, _ in rows} == {"lora", "more", "more-unshared"}
    for level in ("real", "real-full"):
        shared, own = rows[("more", level)], rows[("more-unshared", level)]
        # The same arithmetic, batched or per layer: only the number of ops differs.
        assert shared["flops"] == own["flops"] > rows[("lora", level)]["flops"]
        assert own["train_ms"] > 0 and own["train_ratio"] > 0
