"""Where a training step's time goes, from torch.profiler: GEMMs, routing ops, the rest.

Self time is summed per operator (on a GPU the kernels' device time, on a CPU the
operators' own CPU time). Routing ops are the operators the routers add and LoRA does not
run (top-k, scatter, gather, sigmoid, softmax, their backward kernels and SMoRA's gate
node); the attention softmax of a model runs in LoRA too, so `routing_share` is best read
against LoRA's (`routing_excess`).
"""

from __future__ import annotations

GEMM_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_flash_attention_forward",
        "aten::_flash_attention_backward",
        "aten::_efficient_attention_forward",
        "aten::_efficient_attention_backward",
        "aten::_scaled_dot_product_flash_attention_backward",
        "aten::_scaled_dot_product_efficient_attention_backward",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    }
)
ROUTING_OPS = frozenset(
    {
        "aten::topk",
        "aten::sort",
        "aten::scatter",
        "aten::scatter_",
        "aten::scatter_add",
        "aten::scatter_add_",
        "aten::gather",
        "aten::sigmoid",
        "aten::sigmoid_backward",
        "aten::softmax",
        "aten::_softmax",
        "aten::_softmax_backward_data",
        "aten::log_softmax",
        "aten::repeat_interleave",
        "aten::bincount",
        "aten::one_hot",
        "aten::index_add_",
        "SigmoidTopKGate",
        "SigmoidTopKGateBackward",
    }
)


def op_times(events, device: bool) -> dict[str, dict]:
    """{op name: {"self_us", "calls"}} from `prof.key_averages()`.

    `device`: count the kernels' device time (GPU), where CPU-only ops count zero; else
    the operators' own CPU time.
    """
    table = {}
    for event in events:
        self_us = event.self_device_time_total if device else event.self_cpu_time_total
        entry = table.setdefault(event.key, {"self_us": 0.0, "calls": 0})
        entry["self_us"] += float(self_us)
        entry["calls"] += int(event.count)
    return table


def summarise(table: dict[str, dict], top: int = 12) -> dict:
    """Shares of GEMM and routing ops in the total self time, and the `top` ops by time."""
    total = sum(entry["self_us"] for entry in table.values())
    gemm = sum(entry["self_us"] for name, entry in table.items() if name in GEMM_OPS)
    routing = sum(entry["self_us"] for name, entry in table.items() if name in ROUTING_OPS)
    ranked = sorted(table.items(), key=lambda item: item[1]["self_us"], reverse=True)
    return {
        "total_ms": total / 1e3,
        "gemm_share": gemm / total if total else None,
        "routing_share": routing / total if total else None,
        "top_ops": [
            {"op": name, "self_ms": entry["self_us"] / 1e3, "calls": entry["calls"]}
            for name, entry in ranked[:top]
        ],
    }


def routing_excess(summaries: dict[str, dict], baseline: str) -> dict[str, float | None]:
    """Each case's routing share minus its baseline's (LoRA of the same rank)."""
    base = summaries.get(baseline, {}).get("routing_share")
    return {
        key: None
        if base is None or summary.get("routing_share") is None
        else summary["routing_share"] - base
        for key, summary in summaries.items()
    }
