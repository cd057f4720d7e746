"""Why SMoRA's router sends every token to the same experts on a real LLM, at initialisation.

Attaches smora (r=32, k=8, all 210 linear layers) to SmolLM2-135M-Instruct, runs one batch of
real chat prompts (sentiment and chatbot questions), and for every adapted layer records how
many tokens pick its busiest expert, routing the layer's real input through a freshly
initialised gate in several ways:

    raw           top-k of sigmoid(W x): the paper's router
    on_Ax         a gate over A x instead of x
    small_init    W scaled by 0.01 (top-k of a monotone function ignores the scale)
    rmsnorm       x / rms(x)
    centered      x - mean over the batch's tokens (what `center_router_input` does)
    standardized  (x - mean) / std per dimension

    python scripts/router_concentration.py [--tokens 32] [--json out.json]

Prints, per variant, how many layers have one expert taking > 90 % of tokens and the
median share; per module type, the mean component's share of the input's energy.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from smora_cli import AdapterConfig, attach
from smora_cli.adapters import adapter_layers
from smora_cli.data.collate import CausalLMCollator
from smora_cli.data.offline import OFFLINE_TASKS, materialize
from smora_cli.model_sources import resolve_model_path
from smora_cli.models import load_base_model, load_tokenizer
from smora_cli.utils.log import COLLAPSE_TOKEN_SHARE

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
R, K = 32, 8


def busiest_share(logits: torch.Tensor) -> float:
    """Share of tokens [T, E] whose top-K includes the most picked expert."""
    chosen = torch.sigmoid(logits).topk(K, dim=-1).indices
    counts = torch.bincount(chosen.reshape(-1), minlength=logits.shape[-1])
    return float(counts.max()) / logits.shape[0]


def variants(x: torch.Tensor, gate: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
    """Router logits [T, E] of each variant for the layer inputs x [T, in]."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    gate_over_z = torch.nn.Linear(a.shape[0], gate.shape[0], bias=False).weight
    return {
        "raw": x @ gate.T,
        "on_Ax": (x @ a.T) @ gate_over_z.T,
        "small_init": x @ (0.01 * gate).T,
        "rmsnorm": (x / x.pow(2).mean(-1, keepdim=True).sqrt()) @ gate.T,
        "centered": (x - mean) @ gate.T,
        "standardized": ((x - mean) / std) @ gate.T,
    }


def prompts(per_task: int) -> list[dict]:
    items = []
    for name in ("sentiment", "qa_topic"):
        template = OFFLINE_TASKS[name].prompt
        with open(materialize(name)["validation"]) as handle:
            rows = [json.loads(line) for _, line in zip(range(per_task), handle, strict=False)]
        items += [{"text": template.format(**row), "target": None, "task_id": 0} for row in rows]
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16, help="prompts per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the router initialisation")
    parser.add_argument("--json", help="write per-layer figures here")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    path = resolve_model_path(MODEL)
    tokenizer = load_tokenizer(path, kind="causal-lm")
    model = attach(
        load_base_model(path, kind="causal-lm"),
        AdapterConfig(method="smora", r=R, k=K, target_modules="all-linear"),
    )
    batch = CausalLMCollator(tokenizer, 96, 8, chat=True)(prompts(args.tokens))
    inputs: dict[str, torch.Tensor] = {}
    for name, layer in adapter_layers(model):
        layer.register_forward_pre_hook(lambda _m, a, name=name: inputs.__setitem__(name, a[0]))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    real = batch["attention_mask"].bool()
    rows = []
    with torch.no_grad():
        for name, layer in adapter_layers(model):
            x = inputs[name][real].float()  # [T, in], real tokens only
            logits = variants(x, layer.router.gate.weight.float(), layer.lora_A.float())
            energy = float(x.mean(0).pow(2).sum() / x.pow(2).sum(-1).mean())
            row = {"layer": name, "mean_energy_share": energy}
            row |= {variant: busiest_share(value) for variant, value in logits.items()}
            rows.append(row)

    names = [key for key in rows[0] if key not in ("layer", "mean_energy_share")]
    print(f"{len(rows)} layers, {int(real.sum())} tokens; busiest expert's share of tokens")
    for variant in names:
        shares = sorted(row[variant] for row in rows)
        over = sum(share > COLLAPSE_TOKEN_SHARE for share in shares)
        print(f"  {variant:13s} > 90 %: {over:3d} layers   median {shares[len(shares) // 2]:.2f}")
    by_type = defaultdict(list)
    for row in rows:
        by_type[row["layer"].rsplit(".", 1)[-1]].append(row)
    print("per module: layers > 90 % (raw / centered), mean component's share of input energy")
    for module, group in by_type.items():
        raw = sum(r["raw"] > COLLAPSE_TOKEN_SHARE for r in group)
        centered = sum(r["centered"] > COLLAPSE_TOKEN_SHARE for r in group)
        energy = sorted(r["mean_energy_share"] for r in group)[len(group) // 2]
        print(f"  {module:10s} {raw:2d} / {centered:2d} of {len(group)}   median {energy:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
