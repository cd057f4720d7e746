"""Speed and memory of the rank-expert adapters against plain LoRA of the same total rank.

Commands (from the repository root):

    python scripts/bench_adapters.py --quick --json bench_quick.json      # < 1 min on 2 CPU cores
    python scripts/bench_adapters.py --json bench.json                    # a few minutes on CPU
    python scripts/bench_adapters.py --level layer --tokens 4096 --dim 1024 --profile
    python scripts/bench_adapters.py --device cuda --dtype bfloat16 --json bench_cuda.json
    python scripts/bench_adapters.py --level real --profile      # the packaged SmolLM2-135M
    python scripts/bench_adapters.py --level model --model-config llama1b.json --compile

Levels:

* `layer`: one Llama-shaped linear (in = out = dim, input [batch, tokens/batch, dim] that
  requires grad, as inside a model), forward + backward including the frozen base matmul, and
  forward-only under `torch.no_grad` in eval mode. Reference rows: the frozen base linear alone
  and the naive multi-LoRA MoE of research forks (8 LoRAs of rank 8, top-2, a Python loop over
  experts: `loop-moe` dense per expert, `gather-moe` with index_select/index_add).
* `model`: one AdamW training step (+ `on_optimizer_step`) of a random-init LlamaForCausalLM with
  adapters on every linear layer, PEFT's LoRA on the same model (`peft-lora`), and LoRA and
  MoRE (one task's rank map) models folded into their base weights (`folded-lora`,
  `folded-more`, forward only).
* `lm`: a causal-LM train step (LoRA, vocabulary `--lm-vocab`) whose loss covers the last
  `--lm-target` tokens: logits of that window only (`lm-window`, what `smora train` does)
  against logits of every position (`lm-full-logits`, a plain `model(...).logits` loss).
* `real`: one AdamW step of a real decoder (`--model PATH`, default the packaged
  SmolLM2-135M-Instruct) with adapters on every linear layer, r=32, k=8 (moe-lora: 8 experts
  of rank 4, top-2), every method against LoRA r=32, under two losses: the causal-LM loss
  `smora train` uses (`example_losses` on the last `--real-target` tokens: vocabulary logits
  of that window only; rows `real`) and the full-sequence next-token loss (`real-full`).
  The models are built once and shared by both losses. `more-unshared` is MoRE with every
  layer computing its own task gate and first tokens (`share_with_siblings = False`): what
  sharing them between the sibling layers of a block buys.
* `eval`: rank classification of `--eval-examples` prompts against `--eval-labels` labels on
  the same Llama with a smora adapter: each prompt once, then every label on its key/value
  cache (`rankcls`, what `smora eval` does); every (example, label) pair as its own sequence,
  all in one batch (`rankcls-pairs`); one forward per pair (`rankcls-loop`).

Every AdamW is the one `smora train` builds (`smora_cli.optim.adamw`: fused on CPU).

`--model-config FILE` replaces the model level's Llama by a config.json (e.g. the GPU
check's 1B Llama); `--compile` runs every case through `torch.compile` (`--compile-backend`),
its compilation time (the first warm-up call) in `compile_s`.

Ratios: every row is divided by `lora` of the same total rank r at the same level, measured in
this process, except the folded models, which are divided by the plain base model (`base`,
model level): folding must cost nothing. `peft-lora`'s ratio is PEFT / ours (we want >= 1.0);
the other `rankcls-*` rows are divided by `rankcls`, `lm-window` by `lm-full-logits`.

Timing: warm-up, then the median over `--repeats` rounds of the mean of a few iterations;
inside a round the cases run round-robin, starting at a rotating offset, so machine drift hits
all of them alike. CUDA is synchronised around every timed block.

Peak memory of a training step = bytes of the tensors the case holds (parameters, buffers,
optimizer state, input) + the largest net growth of allocated tensor bytes during one step.
On CUDA the growth is `max_memory_allocated - memory_allocated` around the step; on CPU it is
replayed from the allocation events of `torch.profiler(profile_memory=True)` (tensor storage
through torch's CPU allocator, so oneDNN/MKL scratch space and allocator caching are not
counted, identically for every method).

`--profile` prints the top operators of three training steps per case (device time on CUDA)
and each case's shares of GEMM and routing ops (smora_cli/bench/profile.py); the JSON holds
them under `profile`.

Noise: on a shared or virtual machine other processes inflate the small operators of routed
adapters far more than the large base GEMM (an OpenMP thread that loses its core stalls every
parallel region), so ratios drift upwards when the machine is busy. The `iqr%` column shows
each case's spread; distrust rows above ~15 %, raise `--repeats`, or compare with
`--threads 1`, which is far less sensitive to a busy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import smora_cli
from smora_cli.adapters import (
    AdapterConfig,
    RankExpertLinear,
    adapter_layers,
    attach,
    fold,
    on_optimizer_step,
    routing_context,
)
from smora_cli.adapters.state import aux_losses, clear_aux, weighted_aux_loss
from smora_cli.bench import profile as op_profile
from smora_cli.data.collate import IGNORE
from smora_cli.evaluation.scoring import shared_prompt_log_likelihoods
from smora_cli.models import example_losses
from smora_cli.optim import adamw

ADAPTER_METHODS = ("lora", "smora", "moe-lora", "flylora", "more", "hydra")
# naive MoE (layer level), PEFT LoRA (model level), MoRE with every layer computing its own
# task gate and first tokens (real level: what sharing them between sibling layers buys)
EXTRA_METHODS = ("loop-moe", "peft", "more-unshared")
TASKS = ["a", "b"]
# Flag values of a full run and of --quick; explicit flags override either.
PRESETS = {
    "full": {
        "tokens": 4096,
        "dim": 1024,
        "batch": 4,
        "model_layers": 4,
        "model_dim": 512,
        "model_seq": 256,
        "model_batch": 4,
        "repeats": 7,
        "iters": 3,
        "model_iters": 1,
        "warmup": 2,
        "eval_examples": 16,
        "eval_labels": 4,
        "lm_vocab": 32000,
        "lm_target": 16,
        "real_batch": 4,
        "real_seq": 64,
        "real_target": 16,
    },
    "quick": {
        "tokens": 1024,
        "dim": 512,
        "batch": 4,
        "model_layers": 2,
        "model_dim": 256,
        "model_seq": 128,
        "model_batch": 2,
        "repeats": 7,
        "iters": 5,  # layer steps take ~10 ms here: short blocks would time the timer's noise
        "model_iters": 2,
        "warmup": 1,
        "eval_examples": 4,
        "eval_labels": 2,
        "lm_vocab": 8000,
        "lm_target": 8,
        "real_batch": 2,
        "real_seq": 32,
        "real_target": 8,
    },
}
LEGEND = (
    "x = ratio to the row named under `vs` (same level, same total rank r); ms = median of the "
    "rounds;\npeak MB = tensors held + largest growth during one train step; flop x = ratio of "
    "matmul FLOPs (the arithmetic floor of train x);\niqr% = spread of the rounds (high values: "
    "the machine was busy)"
)
# (method, r, k, expert_rank, baseline lora rank): the cases of METHODS.md's reference setups.
ADAPTER_CASES = (
    ("lora", 64, None, 1, 64),
    ("smora", 64, 8, 1, 64),
    ("moe-lora", 64, 16, 8, 64),  # 8 experts of rank 8, top-2
    ("more", 64, None, 1, 64),
    ("hydra", 64, None, 1, 64),  # 4 B heads: 4x the B work by design
    ("lora", 32, None, 1, 32),
    ("flylora", 32, 8, 1, 32),
)
# Issue 20's real-decoder setting (method, r, k, expert_rank): all against LoRA r=32.
REAL_CASES = (
    ("lora", 32, None, 1),
    ("smora", 32, 8, 1),
    ("moe-lora", 32, 8, 4),  # 8 experts of rank 4, top-2
    ("more", 32, None, 1),
    ("hydra", 32, None, 1),
    ("flylora", 32, 8, 1),
    ("more-unshared", 32, None, 1),
)
REAL_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class Case:
    """One benchmarked configuration and what was measured for it."""

    method: str
    level: str
    r: int | None
    k: int | None
    baseline: str | None  # key of the case whose times divide this one's
    module: nn.Module
    train: Callable[[], None] | None
    forward: Callable[[], None] | None
    static_bytes: int = 0
    optimizer: torch.optim.Optimizer | None = None  # its state counts towards peak memory
    times: dict[str, list[float]] = field(default_factory=lambda: {"train": [], "forward": []})
    peak_bytes: int | None = None
    flops: int | None = None  # matmul FLOPs of one train step (forward for forward-only cases)
    tokens: int = 0  # tokens of one step (tokens/s)
    compile_s: float | None = None  # the first (compiling) call under --compile
    profile: dict | None = None  # --profile: shares of GEMM and routing ops, top ops

    @property
    def key(self) -> str:
        return f"{self.level}/{self.method}/{self.r}"


# --------------------------------------------------------------------------- environment
class Env:
    """Device, dtypes and the synchronisation every timed block needs."""

    def __init__(self, device: str, dtype: str):
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def tensor_bytes(*objects: nn.Module | Tensor | torch.optim.Optimizer | None) -> int:
    """Bytes of the distinct storages held by modules, tensors and optimizer states."""
    seen: dict[int, int] = {}
    for obj in objects:
        if isinstance(obj, nn.Module):
            tensors = itertools.chain(obj.parameters(), obj.buffers())
        elif isinstance(obj, torch.optim.Optimizer):
            tensors = (t for s in obj.state.values() for t in s.values() if isinstance(t, Tensor))
        else:
            tensors = [] if obj is None else [obj]
        for t in tensors:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


# --------------------------------------------------------------------------- naive MoE
class LoopMoELoRA(nn.Module):
    """The multi-LoRA MoE as research forks write it: one small LoRA per expert, a Python loop.

    Softmax router, top-k experts renormalised (as `moe-lora`). `gather=False` runs every
    expert densely on every token and weights its output by the (mostly zero) gate;
    `gather=True` runs each expert on its routed tokens only (nonzero + index_select +
    index_add_, which syncs with the host once per expert).
    """

    def __init__(
        self,
        base: nn.Linear,
        experts: int = 8,
        rank: int = 8,
        top: int = 2,
        alpha: float = 16.0,
        gather: bool = False,
    ):
        super().__init__()
        self.base_layer, self.top, self.gather = base, top, gather
        self.scaling = alpha / (top * rank)  # alpha over the activated rank, as moe-lora
        factory = {"device": base.weight.device, "dtype": torch.float32}
        self.router = nn.Linear(base.in_features, experts, bias=False, **factory)
        self.lora_A = nn.ParameterList(
            nn.Parameter(torch.empty(rank, base.in_features, **factory)) for _ in range(experts)
        )
        self.lora_B = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(base.out_features, rank, **factory))
            for _ in range(experts)
        )
        for weight in self.lora_A:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        result = self.base_layer(x)
        h = x.to(self.router.weight.dtype)
        probs = torch.softmax(self.router(h), dim=-1)
        top_probs, chosen = probs.topk(self.top, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, chosen, top_probs / top_probs.sum(-1, True))
        delta = self._gathered(h, gates) if self.gather else self._dense(h, gates)
        return result + (delta * self.scaling).to(result.dtype)

    def _dense(self, h: Tensor, gates: Tensor) -> Tensor:
        out = 0
        for e, (a, b) in enumerate(zip(self.lora_A, self.lora_B, strict=True)):
            out = out + gates[..., e : e + 1] * F.linear(F.linear(h, a), b)
        return out

    def _gathered(self, h: Tensor, gates: Tensor) -> Tensor:
        flat, flat_gates = h.reshape(-1, h.shape[-1]), gates.reshape(-1, gates.shape[-1])
        out = flat.new_zeros(flat.shape[0], self.base_layer.out_features)
        for e, (a, b) in enumerate(zip(self.lora_A, self.lora_B, strict=True)):
            rows = flat_gates[:, e].nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            y = F.linear(F.linear(flat.index_select(0, rows), a), b)
            out.index_add_(0, rows, y * flat_gates.index_select(0, rows)[:, e : e + 1])
        return out.view(*h.shape[:-1], -1)


# --------------------------------------------------------------------------- layer level
def adapter_config(method: str, r: int, k: int | None, p: int) -> AdapterConfig:
    return AdapterConfig(
        method=method, r=r, k=k, expert_rank=p, task_names=TASKS if method == "more" else []
    )


def randomise_adapter(module: nn.Module) -> None:
    """Non-zero B (a trained adapter's shape of work; folding then changes W for real)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:  # ours, PEFT's `lora_B.default.weight`, LoopMoELoRA's list
                param.normal_(std=1e-3)


def task_ids_for(batch: int, device: torch.device) -> Tensor:
    """Alternate the two tasks over the batch (MoRE's router gates per example)."""
    return (torch.arange(batch, device=device) % len(TASKS)).long()


def routed(module: nn.Module, method: str, task_ids: Tensor):
    """`routing_context` with task ids for `more` (it works on a bare layer too)."""
    if method == "more":
        return routing_context(module, task_ids=task_ids)
    return contextlib.nullcontext()


def layer_steps(
    module: nn.Module, method: str, x: Tensor, grad_out: Tensor
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(train step, forward step) closures for one layer."""
    params = [p for p in module.parameters() if p.requires_grad]
    task_ids = task_ids_for(x.shape[0], x.device)

    def train() -> None:
        for p in params:  # zero_grad(set_to_none=True): grads are re-allocated every step
            p.grad = None
        x.grad = None
        with routed(module, method, task_ids):
            out = module(x)
            aux = list(aux_losses(module).values()) if isinstance(module, RankExpertLinear) else []
            # out.backward(grad_out) == backward of a random projection of the output.
            torch.autograd.backward([out, *aux], [grad_out, *([None] * len(aux))])
        if isinstance(module, RankExpertLinear):
            clear_aux(module)

    def forward() -> None:
        with torch.no_grad(), routed(module, method, task_ids):
            module(x)

    return train, forward


def frozen_linear(dim: int, env: Env) -> nn.Linear:
    torch.manual_seed(0)
    base = nn.Linear(dim, dim, bias=False, device=env.device, dtype=env.dtype)
    return base.requires_grad_(False)


def layer_case(
    method: str,
    r: int | None,
    k: int | None,
    baseline: str | None,
    module: nn.Module,
    x: Tensor,
    grad_out: Tensor,
) -> Case:
    train, forward = layer_steps(module, method, x, grad_out)
    return Case(
        method,
        "layer",
        r,
        k,
        baseline,
        module,
        train,
        forward,
        static_bytes=tensor_bytes(module, x),
        tokens=x.shape[0] * x.shape[1],
    )


def layer_cases(args: argparse.Namespace, env: Env) -> list[Case]:
    """The layer-level cases: base, each adapter method, the naive MoE loops."""
    torch.manual_seed(1)
    shape = (args.batch, args.tokens // args.batch, args.dim)
    x = torch.randn(shape, device=env.device, dtype=env.dtype).requires_grad_()
    grad_out = torch.randn(shape, device=env.device, dtype=env.dtype)
    cases = [
        layer_case("base", None, None, "layer/lora/64", frozen_linear(args.dim, env), x, grad_out)
    ]
    for method, r, k, p, base_r in ADAPTER_CASES:
        if method not in args.methods:
            continue
        torch.manual_seed(2)
        module = RankExpertLinear(
            frozen_linear(args.dim, env), adapter_config(method, r, k, p), name="bench.layer"
        )
        randomise_adapter(module)
        cases.append(
            layer_case(
                method, r, module.config.activated_rank, f"layer/lora/{base_r}", module, x, grad_out
            )
        )
    if "loop-moe" in args.methods:
        for name, gather in (("loop-moe", False), ("gather-moe", True)):
            torch.manual_seed(2)
            module = LoopMoELoRA(frozen_linear(args.dim, env), gather=gather)
            cases.append(layer_case(name, 64, 16, "layer/lora/64", module, x, grad_out))
    return cases


# --------------------------------------------------------------------------- model level
def llama_template(args: argparse.Namespace, env: Env, vocab: int = 1000) -> nn.Module:
    """A random-init Llama; intermediate = 2.6875 dim (Llama's 1376/512), heads of 64.

    `--model-config` replaces these shapes by a config.json (its vocabulary too).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.model_config is not None:
        config = LlamaConfig.from_json_file(str(args.model_config))
        config.max_position_embeddings = max(config.max_position_embeddings, args.model_seq)
        torch.manual_seed(0)
        with torch.device(env.device):  # a 1B model initialises in seconds on a GPU
            model = LlamaForCausalLM(config)
        return model.to(dtype=env.dtype)
    dim = args.model_dim
    heads = max(1, dim // 64)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=16 * max(1, round(dim * 2.6875 / 16)),
        num_hidden_layers=args.model_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(args.model_seq, 64),
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=env.device, dtype=env.dtype)


def model_forward(model: nn.Module, method: str, ids: Tensor) -> Callable[[], None]:
    task_ids = task_ids_for(ids.shape[0], ids.device)

    def forward() -> None:
        with torch.no_grad(), routed(model, method, task_ids):
            model(input_ids=ids, use_cache=False)

    return forward


def model_train(
    model: nn.Module, method: str, ids: Tensor, ours: bool
) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """(train step, its AdamW) for one adapted model."""
    optimizer = adamw(model, lr=1e-4, router_lr=None, weight_decay=0.0)
    task_ids = task_ids_for(ids.shape[0], ids.device)
    config = getattr(model, "smora_config", None)

    def train() -> None:
        with routed(model, method, task_ids):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            if ours:  # what the trainer adds: the weighted auxiliary losses of the routers
                aux = weighted_aux_loss(aux_losses(model), config)
                loss = loss if aux is None else loss + aux
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ours:
            on_optimizer_step(model)
            clear_aux(model)

    return train, optimizer


def model_case(
    method: str,
    r: int | None,
    k: int | None,
    baseline: str,
    model: nn.Module,
    ids: Tensor,
    ours: bool = True,
) -> Case:
    train, optimizer = model_train(model, method, ids, ours)
    forward = model_forward(model, method, ids)
    # The optimizer's state appears during warm-up; measure_memory adds it then.
    static = tensor_bytes(model, ids)
    return Case(
        method,
        "model",
        r,
        k,
        baseline,
        model,
        train,
        forward,
        static,
        optimizer,
        tokens=ids.numel(),
    )


def peft_model(template: nn.Module, r: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(2)
    config = LoraConfig(r=r, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(copy.deepcopy(template), config)
    randomise_adapter(model)
    return model


def folded_model(template: nn.Module, method: str, r: int) -> nn.Module:
    """A trained-looking adapter folded into a copy of the base (MoRE: task "a"'s rank map)."""
    model = attach(copy.deepcopy(template), adapter_config(method, r, None, 1))
    randomise_adapter(model)
    if method == "more":
        with torch.no_grad():  # a rank map other than the init's, as after training
            for layer in model.modules():
                if hasattr(layer, "selector"):
                    layer.selector.bias.normal_()
    return fold(model, task="a" if method == "more" else None)


def model_cases(args: argparse.Namespace, env: Env) -> list[Case]:
    """The model-level cases: each adapter method, PEFT LoRA, base and folded models."""
    template = llama_template(args, env)
    torch.manual_seed(3)
    vocab = min(1000, template.config.vocab_size)
    ids = torch.randint(0, vocab, (args.model_batch, args.model_seq), device=env.device)
    base = Case(
        "base",
        "model",
        None,
        None,
        "model/lora/64",
        template,
        None,
        model_forward(template, "base", ids),
        static_bytes=tensor_bytes(template, ids),
    )
    cases = [base]
    for method in ("lora", "more"):
        if method in args.methods:
            model = folded_model(template, method, 64)
            forward = model_forward(model, "base", ids)
            cases.append(
                Case(f"folded-{method}", "model", 64, None, "model/base/None", model, None, forward)
            )
    for method, r, k, p, base_r in ADAPTER_CASES:
        if method not in args.methods:
            continue
        torch.manual_seed(2)
        model = attach(copy.deepcopy(template), adapter_config(method, r, k, p))
        randomise_adapter(model)
        cases.append(
            model_case(
                method, r, model.smora_config.activated_rank, f"model/lora/{base_r}", model, ids
            )
        )
    if "peft" in args.methods:
        cases.append(
            model_case(
                "peft-lora", 64, 64, "model/lora/64", peft_model(template, 64), ids, ours=False
            )
        )
    return cases


# --------------------------------------------------------------------------- eval level
def rank_classification_inputs(args: argparse.Namespace) -> tuple[Tensor, Tensor]:
    """`--eval-examples` random prompts [N, seq - 2] and `--eval-labels` labels [L, 2]."""
    generator = torch.Generator().manual_seed(4)
    prompts = torch.randint(0, 1000, (args.eval_examples, args.model_seq - 2), generator=generator)
    labels = torch.randint(0, 1000, (args.eval_labels, 2), generator=generator)
    return prompts, labels


def pair_batch(prompts: Tensor, labels: Tensor, env: Env) -> dict[str, Tensor]:
    """Every (prompt, label) pair as one sequence; the loss window is the label."""
    ids = torch.cat(
        [prompts.repeat_interleave(len(labels), 0), labels.repeat(len(prompts), 1)], 1
    ).to(env.device)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids[:, prompts.shape[1] :],
        "task_ids": torch.zeros(len(ids), dtype=torch.long, device=env.device),
    }


def eval_cases(args: argparse.Namespace, env: Env) -> list[Case]:
    """Rank classification on a smora-adapted Llama, three ways (see the module docstring)."""
    model = attach(llama_template(args, env), adapter_config("smora", 64, 8, 1)).eval()
    randomise_adapter(model)
    prompts, labels = rank_classification_inputs(args)
    batch = pair_batch(prompts, labels, env)

    def shared() -> None:
        scores = shared_prompt_log_likelihoods(model, prompts.tolist(), labels.tolist(), 0)
        assert scores is not None, "Llama always returns a repeatable cache"

    def pairs() -> None:
        with torch.no_grad():
            example_losses(model, batch, "causal-lm")

    def looped() -> None:
        with torch.no_grad():
            for i in range(len(batch["input_ids"])):
                example_losses(model, {k: v[i : i + 1] for k, v in batch.items()}, "causal-lm")

    base = "eval/rankcls/64"
    return [
        Case("rankcls", "eval", 64, 8, base, model, None, shared),
        Case("rankcls-pairs", "eval", 64, 8, base, model, None, pairs),
        Case("rankcls-loop", "eval", 64, 8, base, model, None, looped),
    ]


def report_eval(rows: list[dict], args: argparse.Namespace) -> None:
    for row in rows:
        if row["level"] == "eval" and row["forward_ms"]:
            rate = args.eval_examples / (row["forward_ms"] / 1e3)
            print(f"{row['method']}: {rate:.1f} examples/s ({args.eval_labels} labels each)")


# --------------------------------------------------------------------------- lm level
def lm_cases(args: argparse.Namespace, env: Env) -> list[Case]:
    """A causal-LM train step whose loss covers the last `--lm-target` tokens of each row.

    `lm-window`: logits of the target window only (what `smora train` does, collate.py);
    `lm-full-logits`: the same loss from the logits of every position, as a plain
    `model(...).logits` + cross-entropy computes it.
    """
    model = attach(
        llama_template(args, env, vocab=args.lm_vocab), adapter_config("lora", 64, None, 1)
    )
    randomise_adapter(model)
    optimizer = adamw(model, lr=1e-4, router_lr=None, weight_decay=0.0)
    torch.manual_seed(5)
    ids = torch.randint(0, args.lm_vocab, (args.model_batch, args.model_seq), device=env.device)
    labels = ids.clone()
    labels[:, : -args.lm_target] = IGNORE
    full = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "task_ids": torch.zeros(ids.shape[0], dtype=torch.long, device=env.device),
    }
    window = {**full, "labels": labels[:, -args.lm_target :]}

    def step(batch: dict[str, Tensor]) -> Callable[[], None]:
        def train() -> None:
            losses, counts = example_losses(model, batch, "causal-lm")
            (losses.sum() / counts.sum()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return train

    static = tensor_bytes(model, ids)
    baseline = "lm/lm-full-logits/64"

    def case(name: str, batch: dict[str, Tensor]) -> Case:
        return Case(name, "lm", 64, None, baseline, model, step(batch), None, static, optimizer)

    return [case("lm-window", window), case("lm-full-logits", full)]


# --------------------------------------------------------------------------- real level
def real_model(args: argparse.Namespace, env: Env) -> nn.Module:
    """The decoder of `--model` (default: the packaged SmolLM2, converted once and cached)."""
    from transformers import AutoModelForCausalLM

    from smora_cli.model_sources import resolve_model_path

    path = args.model or resolve_model_path(REAL_MODEL)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=env.dtype)
    return model.to(env.device).requires_grad_(False)


def lm_steps(
    model: nn.Module, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(train step, forward) of `smora train`'s causal-LM loss on `batch` (its labels decide
    the window), with the routers' auxiliary losses and balance updates. Routing inputs are
    what `smora train` gives: task ids and the attention mask (padding is not counted)."""
    config = model.smora_config
    task_ids, masks = batch["task_ids"], (batch["attention_mask"],)

    def train() -> None:
        with routing_context(model, task_ids=task_ids, token_masks=masks):
            losses, counts = example_losses(model, batch, "causal-lm")
            loss = losses.sum() / counts.sum()
            aux = weighted_aux_loss(aux_losses(model), config)
            (loss if aux is None else loss + aux).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        on_optimizer_step(model)
        clear_aux(model)

    def forward() -> None:
        with torch.no_grad(), routing_context(model, task_ids=task_ids, token_masks=masks):
            example_losses(model, batch, "causal-lm")

    return train, forward


def real_cases(args: argparse.Namespace, env: Env) -> list[Case]:
    """Every method on the real decoder, under the target-window and the full-sequence loss."""
    template = real_model(args, env)
    torch.manual_seed(6)
    shape = (args.real_batch, args.real_seq)
    ids = torch.randint(0, template.config.vocab_size, shape, device=env.device)
    common = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "task_ids": task_ids_for(args.real_batch, env.device),
    }
    batches = {"real": {**common, "labels": ids[:, -args.real_target :]}}
    batches["real-full"] = {**common, "labels": ids}
    cases = []
    for name, r, k, p in REAL_CASES:
        if name not in args.methods:
            continue
        method = "more" if name == "more-unshared" else name
        torch.manual_seed(2)
        model = attach(copy.deepcopy(template), adapter_config(method, r, k, p))
        randomise_adapter(model)
        if name == "more-unshared":
            for _, layer in adapter_layers(model):
                layer.router.share_with_siblings = False
        optimizer = adamw(model, lr=1e-4, router_lr=None, weight_decay=0.0)
        static = tensor_bytes(model, ids)
        active = model.smora_config.activated_rank
        for level, batch in batches.items():
            train, forward = lm_steps(model, batch, optimizer)
            baseline = f"{level}/lora/32"
            cases.append(
                Case(name, level, r, active, baseline, model, train, forward, static, optimizer)
            )
            cases[-1].tokens = ids.numel()
    return cases


LEVELS = {
    "layer": layer_cases,
    "model": model_cases,
    "eval": eval_cases,
    "lm": lm_cases,
    "real": real_cases,  # rows at levels `real` and `real-full`
}


# --------------------------------------------------------------------------- measuring
def timed(fn: Callable[[], None], iters: int, env: Env) -> float:
    """Mean seconds per call of `fn` over `iters` back-to-back calls."""
    env.sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    env.sync()
    return (time.perf_counter() - start) / iters


def run_rounds(cases: list[Case], phase: str, args: argparse.Namespace, env: Env) -> None:
    """Warm every case up, then `repeats` round-robin rounds with a rotating start."""
    iters = args.iters if cases and cases[0].level == "layer" else args.model_iters
    active = [c for c in cases if getattr(c, phase) is not None]
    for case in active:
        case.module.train(phase == "train")
        for i in range(args.warmup):
            seconds = timed(getattr(case, phase), 1, env)
            if i == 0 and args.compile:  # the call that compiled this phase's graph
                case.compile_s = (case.compile_s or 0.0) + seconds
    gc.collect()
    gc.disable()  # a collection inside a timed block would charge one case at random
    try:
        for round_index in range(args.repeats):
            shift = round_index % max(1, len(active))
            for case in active[shift:] + active[:shift]:
                case.module.train(phase == "train")
                case.times[phase].append(timed(getattr(case, phase), iters, env))
    finally:
        gc.enable()


def cpu_peak_growth(fn: Callable[[], None]) -> int:
    """Largest net growth of torch CPU tensor bytes while `fn` runs (profiler replay)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def peak_growth(fn: Callable[[], None], env: Env) -> int:
    if not env.cuda:
        return cpu_peak_growth(fn)
    env.sync()
    before = torch.cuda.memory_allocated(env.device)
    torch.cuda.reset_peak_memory_stats(env.device)
    fn()
    env.sync()
    return torch.cuda.max_memory_allocated(env.device) - before


def count_flops(cases: list[Case]) -> None:
    """Matmul/attention FLOPs of one train step (or forward) per case: the floor of its time.

    Routing ops (top-k, scatter, elementwise) are not counted, so `time ratio / FLOP ratio`
    is the overhead that is not arithmetic: what kernel work can still remove.
    """
    from torch.utils.flop_counter import FlopCounterMode

    for case in cases:
        step = case.train or case.forward
        case.module.train(case.train is not None)
        with FlopCounterMode(display=False) as counter:
            step()
        case.flops = counter.get_total_flops()


def measure_memory(cases: list[Case], env: Env) -> None:
    """Peak bytes of one training step per case (after warm-up: optimizer state exists)."""
    gc.collect()  # once: a collection costs ~0.2 s with transformers imported
    for case in cases:
        if case.train is None:
            continue
        case.module.train(True)
        growth = peak_growth(case.train, env)
        held = tensor_bytes(case.optimizer)
        case.peak_bytes = case.static_bytes + held + growth


# --------------------------------------------------------------------------- reporting
def median_ms(case: Case | None, phase: str) -> float | None:
    if case is None or not case.times[phase]:
        return None
    return 1e3 * statistics.median(case.times[phase])


def spread_pct(case: Case) -> float | None:
    """Inter-quartile range of the rounds over their median, in %: the run's own noise."""
    times = case.times["train"] or case.times["forward"]
    if len(times) < 2:
        return None
    low, _, high = statistics.quantiles(times, n=4)
    return 100 * (high - low) / statistics.median(times)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 4)


def result_rows(cases: list[Case]) -> list[dict]:
    """The JSON `results`: times in ms and ratios against each case's baseline."""
    by_key = {case.key: case for case in cases}
    rows = []
    for case in cases:
        base = by_key.get(case.baseline or "")
        train, forward = median_ms(case, "train"), median_ms(case, "forward")
        rate = case.tokens / (train / 1e3) if train and case.tokens else None
        # FLOPs compare like with like: a train step with a train step, a forward with a forward.
        same_phase = base is not None and (base.train is None) == (case.train is None)
        rows.append(
            {
                "method": case.method,
                "level": case.level,
                "r": case.r,
                "k": case.k,
                "train_ratio": ratio(train, median_ms(base, "train")),
                "forward_ratio": ratio(forward, median_ms(base, "forward")),
                "peak_mem_ratio": ratio(case.peak_bytes, base.peak_bytes if base else None),
                "flop_ratio": ratio(case.flops, base.flops if same_phase else None),
                "flops": case.flops,
                "train_ms": None if train is None else round(train, 3),
                "forward_ms": None if forward is None else round(forward, 3),
                "tokens_per_s": None if rate is None else round(rate, 1),
                "compile_s": None if case.compile_s is None else round(case.compile_s, 2),
            }
        )
    return rows


def format_table(rows: list[dict], cases: list[Case]) -> str:
    def cell(value, spec: str) -> str:
        width = int(spec.lstrip(">").split(".")[0].rstrip("df"))
        return "-".rjust(width) if value is None else format(value, spec)

    header = (
        f"{'method':<14} {'level':<9} {'r':>3} {'k':>3} {'train ms':>9} {'train x':>8} "
        f"{'fwd ms':>8} {'fwd x':>7} {'peak MB':>8} {'mem x':>6} {'flop x':>6} {'tok/s':>9} "
        f"{'iqr%':>5}  vs"
    )
    lines = [header, "-" * len(header)]
    for row, case in zip(rows, cases, strict=True):
        peak_mb = None if case.peak_bytes is None else case.peak_bytes / 2**20
        lines.append(
            f"{row['method']:<14} {row['level']:<9} {cell(row['r'], '>3')} {cell(row['k'], '>3')} "
            f"{cell(row['train_ms'], '>9.2f')} {cell(row['train_ratio'], '>8.3f')} "
            f"{cell(row['forward_ms'], '>8.2f')} {cell(row['forward_ratio'], '>7.3f')} "
            f"{cell(peak_mb, '>8.1f')} {cell(row['peak_mem_ratio'], '>6.3f')} "
            f"{cell(row['flop_ratio'], '>6.3f')} {cell(row['tokens_per_s'], '>9.0f')} "
            f"{cell(spread_pct(case), '>5.1f')}  "
            f"{(case.baseline or '-').replace('/None', '')}"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "smora": smora_cli.__version__,
    }
    for name in ("transformers", "peft"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "not installed"
    return out


def meta(args: argparse.Namespace, env: Env) -> dict:
    shapes = {key: getattr(args, key) for key in PRESETS["full"]}
    shapes.update(
        levels=args.level,
        methods=args.methods,
        quick=args.quick,
        model_config=None if args.model_config is None else str(args.model_config),
        real_model=args.model or (REAL_MODEL if "real" in args.level else None),
        compile=args.compile_backend if args.compile else None,
    )
    return {
        "versions": versions(),
        "shapes": shapes,
        "device": str(env.device),
        "dtype": str(env.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- profiling
def profile_cases(cases: list[Case], env: Env, rows: int = 12) -> None:
    """`--profile`: top operators of three training steps per case, GEMM and routing shares.

    Each case's summary goes to `case.profile`; routing shares are also given against the
    case's baseline (LoRA of the same rank: the ops a router adds).
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if env.cuda else [])
    sort_by = "self_device_time_total" if env.cuda else "self_cpu_time_total"
    for case in cases:
        if case.train is None:
            continue
        case.module.train(True)
        with profile(activities=activities) as prof:
            for _ in range(3):
                case.train()
            env.sync()
        events = prof.key_averages()
        case.profile = op_profile.summarise(op_profile.op_times(events, env.cuda), top=rows)
        print(f"\n=== {case.key}: top ops of 3 train steps, by {sort_by}")
        print(events.table(sort_by=sort_by, row_limit=rows))
    summaries = {case.key: case.profile for case in cases if case.profile}
    for case in cases:
        if case.profile and case.baseline in summaries:
            excess = op_profile.routing_excess(summaries, case.baseline)[case.key]
            case.profile["routing_excess"] = excess
    print(f"\n{'case':<24} {'gemm %':>7} {'routing %':>10} {'vs lora':>8}")
    for key, summary in summaries.items():
        excess = summary.get("routing_excess")
        print(
            f"{key:<24} {100 * (summary['gemm_share'] or 0):>7.1f} "
            f"{100 * (summary['routing_share'] or 0):>10.1f} "
            f"{'-' if excess is None else format(100 * excess, '+.1f'):>8}"
        )


# --------------------------------------------------------------------------- main
def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key in PRESETS["full"]:
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default {PRESETS['full'][key]} (--quick: {PRESETS['quick'][key]})",
        )
    parser.add_argument(
        "--methods",
        type=csv_list,
        default=list(ADAPTER_METHODS + EXTRA_METHODS),
        help="comma list of "
        + ",".join(ADAPTER_METHODS + EXTRA_METHODS)
        + " (lora is always run: it is the baseline)",
    )
    parser.add_argument(
        "--level",
        type=csv_list,
        default=[level for level in LEVELS if level != "real"],
        help=f"comma list of {','.join(LEVELS)} (default: all but real)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="small shapes, well under a minute")
    parser.add_argument(
        "--profile", action="store_true", help="top ops, GEMM and routing shares per case"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--model-config", type=Path, default=None, help="model level: a Llama config.json"
    )
    parser.add_argument(
        "--model", default=None, help=f"real level: a decoder directory (default {REAL_MODEL})"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile every case")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.methods) - set(ADAPTER_METHODS + EXTRA_METHODS)
    bad_level = set(args.level) - set(LEVELS)
    if unknown or bad_level or args.tokens % args.batch:
        parser.error(
            f"unknown methods {sorted(unknown)} / levels {sorted(bad_level)}, or "
            f"--tokens {args.tokens} is not a multiple of --batch {args.batch}"
        )
    for flag, path in (("--model-config", args.model_config), ("--model", args.model)):
        if path is not None and not Path(path).exists():
            parser.error(f"{flag} {path}: no such file or directory")
    if args.real_target >= args.real_seq:
        parser.error(f"--real-target {args.real_target} must be below --real-seq {args.real_seq}")
    args.methods = ["lora", *(m for m in args.methods if m != "lora")]
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write `--json`; returns the JSON document."""
    args = parse_args(argv)
    # PEFT touches a transformers attribute deprecated in v5; the warning is not ours to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    env = Env(args.device, args.dtype)
    if env.cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {env.device}, "
        f"dtype {args.dtype}; adapters in float32 over {args.dtype} base weights",
        flush=True,
    )
    cases: list[Case] = []
    for level, build in LEVELS.items():
        if level not in args.level:
            continue
        level_cases = build(args, env)
        if args.compile:
            # Every case's model runs the same forward code: dynamo keeps one compiled entry
            # per model and phase on it, far more than its default limit of 8 (beyond which it
            # would fall back to eager without a word).
            torch._dynamo.config.cache_size_limit = 16 * len(level_cases)
            torch._dynamo.config.accumulated_cache_size_limit = 64 * len(level_cases)
            for module in {id(case.module): case.module for case in level_cases}.values():
                module.compile(backend=args.compile_backend)
        for phase in ("train", "forward"):
            run_rounds(level_cases, phase, args, env)
        measure_memory(level_cases, env)
        count_flops(level_cases)
        if args.profile:
            profile_cases(level_cases, env)
        cases += level_cases
    rows = result_rows(cases)
    print(format_table(rows, cases))
    print(LEGEND)
    report_peft(rows)
    report_eval(rows, args)
    print(f"total {time.perf_counter() - started:.1f} s", flush=True)
    document = {"meta": meta(args, env), "results": rows}
    if args.profile:
        document["profile"] = {case.key: case.profile for case in cases if case.profile}
    if args.json is not None:
        write_json(args.json, document)
    return document


def write_json(path: Path, document: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)


def report_peft(rows: list[dict]) -> None:
    """Our LoRA against PEFT's on the same model (the peft-lora row holds PEFT / ours)."""
    for row in rows:
        if row["method"] == "peft-lora" and row["train_ratio"]:
            print(f"smora lora / peft lora (model train step): {1 / row['train_ratio']:.3f}x")


if __name__ == "__main__":
    main()
