"""Every method under bf16 autocast and on bf16 base weights (float32 adapters), against float32.

Tolerances (relative L2 error of the logits; cosine of the adapter gradient vector):
router-free or dense gates (lora, more, hydra) stay within 2 % of float32; token-routed
methods (moe-lora, smora, flylora) within 10 %, because a bf16-rounded hidden state can flip
a top-k choice, which changes that token's output discretely. Routing itself runs in
float32, so the number of picks per layer is exactly the float32 number and at most 3 % of
the picks move to another expert.
"""

from __future__ import annotations

import pytest
import torch

from smora_cli import AdapterConfig, attach, routing_context
from smora_cli.adapters import adapter_layers, on_optimizer_step
from tests import tiny_models

PRECISION_CASES = {
    "lora": (dict(method="lora", r=8), 0.02),
    "moe-lora": (dict(method="moe-lora", r=8, k=4, expert_rank=2), 0.10),
    "smora": (dict(method="smora", r=8, k=4), 0.10),
    "smora-h-gate": (dict(method="smora", r=8, k=4, gate_uses_bias=False), 0.10),
    "smora-unfused": (dict(method="smora", r=8, k=4), 0.10),
    "flylora": (dict(method="flylora", r=8, k=4), 0.10),
    "more": (dict(method="more", r=8, task_names=["a", "b"]), 0.02),
    "hydra": (dict(method="hydra", r=8), 0.02),
}
MODES = ("autocast-bf16", "bf16-weights")
TASK_IDS = torch.tensor([0, 1, 0, 1])


def _model(case: str, mode: str | None):
    config, _ = PRECISION_CASES[case]
    model = tiny_models.llama()
    attach(model, AdapterConfig(**config, target_modules="all-linear"))
    # Trained-adapter magnitudes: the adapter perturbs the base model, it does not drown it.
    tiny_models.randomize_adapter(model, std=0.05)
    if case == "smora-unfused":
        for _, layer in adapter_layers(model):
            layer.router.fused_gate = False
    if mode == "bf16-weights":
        for param in model.parameters():
            if not param.requires_grad:
                param.data = param.data.bfloat16()
    return model.train()


def _step(model, mode: str | None, batch: dict):
    """Logits (float32), the adapter gradient vector and each layer's pending pick counts."""
    masks = (batch["attention_mask"],)
    with (
        routing_context(model, task_ids=TASK_IDS, token_masks=masks),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast-bf16"),
    ):
        logits = model(**batch).logits
    logits.float().square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    counts = [
        layer.router.counter.pending.clone()
        for _, layer in adapter_layers(model)
        if layer.router.counter is not None
    ]
    return logits.float(), grads, counts


@pytest.fixture(scope="module")
def batch():
    data = tiny_models.inputs(batch=4, seq=16)
    data["attention_mask"][0, :3] = 0  # padding is never counted
    return data


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(PRECISION_CASES))
def test_low_precision_is_close_to_float32(case, mode, batch):
    ref_logits, ref_grads, ref_counts = _step(_model(case, None), None, batch)
    model = _model(case, mode)
    logits, grads, counts = _step(model, mode, batch)

    assert torch.isfinite(logits).all() and torch.isfinite(grads).all()
    tolerance = PRECISION_CASES[case][1]
    assert (logits - ref_logits).norm() / ref_logits.norm() < tolerance
    assert torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0) > 0.99
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(counts, ref_counts, strict=True))
    total = sum(float(c.sum()) for c in ref_counts)
    for ours, theirs in zip(counts, ref_counts, strict=True):
        assert float(ours.sum()) == float(theirs.sum())  # same picks per real token
    assert moved <= 0.03 * 2 * max(total, 1.0)  # each moved pick shows twice in the L1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["smora", "flylora", "moe-lora", "more"])
def test_low_precision_train_step_updates_adapter_and_balance(case, mode, batch):
    model = _model(case, mode)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    biases = {n: b.clone() for n, b in model.named_buffers() if n.endswith("balance_bias")}
    _step(model, mode, batch)
    optimizer.step()
    on_optimizer_step(model)
    after = dict(model.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    for name, bias in biases.items():  # loss-free balancing moved (rate > 0)
        current = dict(model.named_buffers())[name]
        assert current.dtype == torch.float32 and not torch.equal(current, bias)
