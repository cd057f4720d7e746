"""What the GPU check runs: model size, method variants, precisions, tolerances and recipes.

Two plans share every step: `gpu` (the ~1B Llama on one H200, sized to finish in about eight
minutes) and `cpu` (the dry run: the same steps with tiny shapes, to prove the script before
a GPU is spent on it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from smora_cli.bench.llama import LLAMA_1B, TINY

# Every method the toolkit trains, smora under both gate forms (h + b and h alone).
VARIANTS = ("lora", "moe-lora", "smora", "smora-gate-h", "flylora", "more", "hydra")
PRECISIONS = {
    "float32": {"model.dtype": "float32", "train.mixed_precision": "no"},
    "bf16-autocast": {"model.dtype": "float32", "train.mixed_precision": "bf16"},
    "bf16-weights": {"model.dtype": "bfloat16", "train.mixed_precision": "no"},
}
REFERENCE = "float32"
# Stated tolerances (relative). bf16 keeps 8 significant bits (a relative step of 2^-8 =
# 0.4 %) and the random model's loss (~ln 32000 = 10.4) sums rounding over 16 layers, so a
# bf16 loss within 2 % of the float32 loss at every step is agreement; a real precision bug
# (an adapter in bf16, a lost gradient) shows as a drift far above that within 20 steps.
BF16_LOSS_RTOL = 0.02
# A resumed run repeats the uninterrupted one's arithmetic; on a GPU only non-deterministic
# reductions (atomics in scatter_add, cuBLAS split-K) separate them.
RESUME_LOSS_RTOL = 1e-3
RESUME_ADAPTER_RTOL = 1e-2
# One process under DDP/FSDP/ZeRO-2 against the plain run of the same recipe: FSDP's
# bf16 policy also rounds the float32 adapter to bf16, hence the bf16 tolerance.
DISTRIBUTED_LOSS_RTOL = 0.02

TOPICS = {
    "sport": "goal match team ball coach score run win league cup".split(),
    "food": "bread soup rice apple salt cook bake taste meal fruit".split(),
    "weather": "rain snow wind cloud storm sun cold warm fog ice".split(),
}
FILLER = "the a one two big small old new red blue city river house road".split()


@dataclass
class Plan:
    """Sizes of one check; `gpu()` and `cpu()` are the two in use."""

    name: str
    model: dict
    rank: int
    active: int
    expert_rank: int  # moe-lora: ranks per expert
    steps: int
    save_steps: int
    distributed_steps: int
    batch_size: int
    max_length: int
    examples: int  # training examples per task
    eval_limit: int
    bench: list[str] = field(default_factory=list)  # bench_adapters.py flags of every run
    bench_layer: list[str] = field(default_factory=list)
    bench_methods: str | None = None  # None: every method the bench knows
    compile_layers: int = 2  # the compiled model-level comparison uses this many layers
    compile_methods: str = "smora,more"  # LoRA (both ranks) always runs: the baseline
    compile_backend: str = "inductor"
    device: str = "cuda"

    @classmethod
    def gpu(cls) -> Plan:
        return cls(
            name="gpu",
            model=dict(LLAMA_1B),
            rank=64,
            active=8,
            expert_rank=8,
            steps=20,
            save_steps=10,
            distributed_steps=10,
            batch_size=8,
            max_length=128,
            examples=256,
            eval_limit=64,
            bench=["--repeats", "5", "--warmup", "2", "--model-seq", "512", "--model-batch", "8"],
            bench_layer=["--dim", "4096", "--tokens", "8192", "--batch", "4"],
            # Inductor compiles each case's train and forward graphs (~10-30 s each on the
            # H200's 16 cores): two layers and the two methods whose small ops compile could
            # fuse keep this within the section's five minutes.
            compile_layers=2,
            compile_methods="smora,more",
        )

    @classmethod
    def cpu(cls) -> Plan:
        return cls(
            name="cpu",
            model=dict(TINY),
            rank=8,
            active=2,
            expert_rank=2,
            steps=4,
            save_steps=2,
            distributed_steps=2,
            batch_size=4,
            max_length=48,
            examples=32,
            eval_limit=8,
            bench=[
                "--repeats",
                "1",
                "--warmup",
                "1",
                "--iters",
                "1",
                "--model-iters",
                "1",
                "--model-seq",
                "16",
                "--model-batch",
                "2",
            ],
            bench_layer=["--dim", "64", "--tokens", "64", "--batch", "4"],
            bench_methods="smora,moe-lora,flylora",
            compile_layers=1,
            compile_methods="smora",
            # dynamo + AOT autograd without inductor's C++ build: the dry run proves the
            # tracing of every adapter, not CPU code generation.
            compile_backend="aot_eager",
            device="cpu",
        )

    def adapter(self, variant: str) -> dict:
        """The `adapter:` section of a method variant at this plan's rank."""
        r, k = self.rank, self.active
        sections = {
            "lora": {"method": "lora", "r": r},
            "moe-lora": {
                "method": "moe-lora",
                "r": r,
                "k": 2 * self.expert_rank,
                "expert_rank": self.expert_rank,
            },
            # A visible balance rate: the biases move within the run, so h + b and h differ.
            "smora": {"method": "smora", "r": r, "k": k, "balance_rate": 1e-3},
            "smora-gate-h": {
                "method": "smora",
                "r": r,
                "k": k,
                "balance_rate": 1e-3,
                "gate_uses_bias": False,
            },
            "flylora": {"method": "flylora", "r": r, "k": k},
            "more": {"method": "more", "r": r},
            "hydra": {"method": "hydra", "r": r},
        }
        return {**sections[variant], "alpha": 16, "target_modules": "all-linear"}


def task_rows(task: str, n: int, seed: int) -> list[dict]:
    """Synthetic classification rows: the label is readable from the words (learnable)."""
    rng = random.Random(f"{task}:{seed}")
    rows = []
    for _ in range(n):
        if task == "sentiment":
            label = rng.choice(["negative", "positive"])
            cue = "good great" if label == "positive" else "bad awful"
            words = rng.choices(FILLER, k=6) + cue.split()
        else:
            label = rng.choice(sorted(TOPICS))
            words = rng.choices(FILLER, k=3) + rng.choices(TOPICS[label], k=4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_tasks(root: Path, examples: int) -> dict[str, Path]:
    """Two task folders (train/validation jsonl); returns {task name: folder}."""
    folders = {}
    for task in ("sentiment", "topic"):
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, n, seed in (("train", examples, 1), ("validation", max(8, examples // 4), 2)):
            rows = task_rows(task, n, seed)
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        folders[task] = folder
    return folders


def corpus(examples: int) -> list[str]:
    """Text the tokenizer is trained on: inputs, prompt words and label words of both tasks."""
    lines = [row["text"] for task in ("sentiment", "topic") for row in task_rows(task, examples, 1)]
    words = ["Review: Sentiment: Text: Topic:", "negative positive " + " ".join(sorted(TOPICS))]
    return lines + words * 16


def recipe(plan: Plan, model_dir: Path, tasks: dict[str, Path], variant: str, out: Path) -> dict:
    """A `smora train` recipe of one method variant (precision comes as overrides)."""
    return {
        "model": {
            "name_or_path": str(model_dir),
            "kind": "causal-lm",
            "max_length": plan.max_length,
            "target_max_length": 4,
        },
        "adapter": plan.adapter(variant),
        "tasks": [
            {
                "name": "sentiment",
                "source": str(tasks["sentiment"]),
                "labels": ["negative", "positive"],
                "prompt": "Review: {text}\nSentiment:",
            },
            {
                "name": "topic",
                "source": str(tasks["topic"]),
                "labels": sorted(TOPICS),
                "prompt": "Text: {text}\nTopic:",
            },
        ],
        "mixing": {"strategy": "uniform"},
        "train": {
            "output_dir": str(out),
            "max_steps": plan.steps,
            "batch_size": plan.batch_size,
            "lr": 1e-3,
            # Constant rate, no warm-up: the first N steps of any run are the same N steps,
            # so 10-step distributed runs compare with the plain 10-step run step by step.
            "scheduler": "constant",
            "warmup_ratio": 0.0,
            "save_steps": plan.save_steps,
            "save_total_limit": None,
            "log_steps": 1,
            "seed": 0,
        },
        "eval": {"at_end": False, "batch_size": 16, "limit": plan.eval_limit},
    }
