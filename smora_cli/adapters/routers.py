"""Routers: how each method computes the gate g over the r ranks of one adapter.

Every router maps the adapter input `x [.., in]` and its projection `z = A x [.., r]` to
`Routing.weights`, broadcastable to `[.., r]` (zero for inactive ranks), or to `[.., heads]`
for the shared-A head layout of HydraLoRA. The layer never branches on the router type.

Load-balancing biases (smora, flylora) are buffers that change only in
`apply_step_counts`, which the trainer reaches once per optimizer step through
`smora_cli.adapters.state.on_optimizer_step`; forward passes only count selections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.gates import SigmoidTopKGate, at_least_float32, expand_experts
from smora_cli.errors import AdapterError


@dataclass
class RoutingInputs:
    """Per-batch routing inputs, set on the layers by `routing_context` for one call.

    Attributes:
        task_ids: [batch] task index into `AdapterConfig.task_names` (task-routed methods).
        token_masks: [batch, seq] masks of real (non-padding) tokens; a layer uses the one
            whose shape matches its input, so encoder and decoder masks can travel together.
    """

    task_ids: Tensor | None = None
    token_masks: tuple[Tensor, ...] = ()

    def token_weights(self, lead_shape: torch.Size) -> Tensor | None:
        """[*lead_shape] float weights of real tokens, or None when no mask fits."""
        matching = [m for m in self.token_masks if m.shape == lead_shape]
        if not matching:
            return None
        mask = matching[0].bool()
        for other in matching[1:]:  # same-shaped encoder/decoder masks: count either
            mask = mask | other.bool()
        return mask.float()


NO_INPUTS = RoutingInputs()


class Routing(NamedTuple):
    weights: Tensor | None  # broadcastable to [.., r] (or [.., heads]); None = every rank at 1
    aux: dict[str, Tensor]  # raw auxiliary losses; coefficients are applied by the trainer
    # s * z * g when the router applies its gate itself (a fused autograd node); then `weights`
    # is None and the layer uses this as the input of B.
    output: Tensor | None = None


class ExpertCounter(nn.Module):
    """Counts how many real tokens picked each expert, on device and without host syncs."""

    def __init__(self, num_experts: int):
        super().__init__()
        # Not persistent: counts are zero at every checkpoint (taken after an optimizer step).
        self.register_buffer("pending", torch.zeros(num_experts), persistent=False)
        self.register_buffer("seen", torch.zeros(num_experts), persistent=False)

    @torch.no_grad()
    def record(self, chosen: Tensor, token_weights: Tensor | None) -> None:
        """chosen: [.., kk] expert indices; token_weights: [..] (1 real token, 0 padding)."""
        ones = torch.ones_like(chosen, dtype=self.pending.dtype)
        if token_weights is not None:
            ones = ones * token_weights.unsqueeze(-1).to(ones.dtype)
        self.pending.scatter_add_(0, chosen.reshape(-1), ones.reshape(-1))


class InputCentering(nn.Module):
    """A running mean of a router's inputs, which the router subtracts before its gate.

    LLM hidden states carry a large token-independent component (a few "massive activation"
    dimensions); through a random gate it adds the same logit offset W mu to every token,
    so every token picks the same experts (docs/methods.md, router concentration). Routing
    on x - mu removes it. Like the balance bias, mu changes only in `apply_step_sums`, once
    per optimizer step, from sums gathered over micro-batches and processes (real tokens
    only); in evaluation it is frozen.
    """

    MOMENTUM = 0.01  # after the first 1/MOMENTUM steps, an exponential moving average

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        # [sum of x over real tokens..., token count]; zero at every checkpoint.
        self.register_buffer("pending", torch.zeros(in_features + 1), persistent=False)

    @torch.no_grad()
    def record(self, x: Tensor, token_weights: Tensor | None) -> None:
        flat = x.reshape(-1, x.shape[-1]).to(self.pending.dtype)
        if token_weights is None:
            self.pending[:-1] += flat.sum(0)
            self.pending[-1] += flat.shape[0]
        else:
            weights = token_weights.reshape(-1).to(flat.dtype)
            self.pending[:-1] += weights @ flat
            self.pending[-1] += weights.sum()

    @torch.no_grad()
    def apply_step_sums(self, sums: Tensor) -> None:
        """The first step sets the mean; then a running average, later an EMA."""
        count = sums[-1].clamp_min(1.0)
        step_mean = sums[:-1] / count
        rate = torch.clamp(1.0 / (self.updates + 1).float(), min=self.MOMENTUM)
        moved = self.mean + rate * (step_mean - self.mean)
        self.mean.copy_(torch.where(sums[-1] > 0, moved, self.mean))
        self.updates += (sums[-1] > 0).long()

    def logit_offset(self, weight: Tensor) -> Tensor:
        """W mu [E]: subtracting it from W x routes on x - mu."""
        return F.linear(self.mean.to(weight.dtype), weight)


class Router(nn.Module):
    """Base router: every rank active with weight 1 (plain LoRA)."""

    #: whether `A` is trained; the implicit router of FlyLoRA freezes it.
    trains_a = True
    #: B heads sharing one A (HydraLoRA); 1 for every rank-gated method.
    heads = 1

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.centering = InputCentering(in_features) if config.center_router_input else None

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        return Routing(None, {})

    @property
    def gate_weight(self) -> Tensor | None:
        """[E, in] weight of a bias-free token gate `W x`, which the layer may compute in the
        same matmul as `A x` and pass back as `logits` (one pass over x instead of two)."""
        gate = getattr(self, "gate", None)
        return gate.weight if isinstance(gate, nn.Linear) and gate.bias is None else None

    def _logits(self, x: Tensor, logits: Tensor | None, inputs: RoutingInputs) -> Tensor:
        # Routing decisions in float32 whatever the autocast dtype: bf16 logits (8 mantissa
        # bits) tie and flip top-k choices (Switch Transformer's "selective precision").
        logits = at_least_float32(self.gate(x) if logits is None else logits)
        if self.centering is None:
            return logits
        if self.training:
            self.centering.record(x, inputs.token_weights(x.shape[:-1]))
        return logits - self.centering.logit_offset(self.gate.weight).to(logits.dtype)

    def reset_parameters(self) -> None:
        """Re-initialise trainable routing parameters: a token gate keeps nn.Linear's init."""
        gate = getattr(self, "gate", None)
        if isinstance(gate, nn.Linear):
            gate.reset_parameters()

    def static_weights(self, task_id: int | None) -> Tensor | None:
        """The gate when it does not depend on the token, for folding into W0."""
        return None

    @property
    def counter(self) -> ExpertCounter | None:
        return None

    def apply_step_counts(self, counts: Tensor) -> None:
        """Called once per optimizer step with this router's all-reduced expert counts."""


def cannot_fold_error(method: str) -> AdapterError:
    """The refusal for folding an adapter whose gate depends on the token."""
    return AdapterError(
        f"method {method!r} routes every token to different ranks, so it cannot be folded into "
        "the base weights; keep it as an adapter, or merge several such adapters in factor space "
        "with `smora merge` (merge_method: mean)"
    )


class _CountingRouter(Router):
    """A router that picks experts per token and counts the picks."""

    def __init__(self, in_features: int, config: AdapterConfig, num_experts: int):
        super().__init__(in_features, config)
        self.counts = ExpertCounter(num_experts)

    @property
    def counter(self) -> ExpertCounter:
        return self.counts

    def static_weights(self, task_id: int | None) -> Tensor | None:
        raise cannot_fold_error(self.config.method)

    def _record(self, chosen: Tensor, inputs: RoutingInputs) -> None:
        if self.training:
            self.counts.record(chosen, inputs.token_weights(chosen.shape[:-1]))


class _BalanceBiasRouter(_CountingRouter):
    """Adds DeepSeek-style auxiliary-loss-free balancing: a bias that only affects selection."""

    def __init__(self, in_features: int, config: AdapterConfig, num_experts: int):
        super().__init__(in_features, config, num_experts)
        self.register_buffer("balance_bias", torch.zeros(num_experts))

    @torch.no_grad()
    def apply_step_counts(self, counts: Tensor) -> None:
        rate = self.config.effective_balance_rate
        if rate > 0:
            # b_e <- b_e + u * sign(mean(c) - c_e): under-used experts become more likely.
            # (No counts, e.g. in evaluation, give sign(0) = 0: no move and no host sync.)
            self.balance_bias += rate * torch.sign(counts.mean() - counts)


class SoftmaxTopKRouter(_CountingRouter):
    """moe-lora: softmax over E experts, top-(k/p), renormalised; Switch balance loss."""

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config, config.num_expert_blocks)
        self.gate = nn.Linear(in_features, config.num_expert_blocks, bias=False)

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        probs = torch.softmax(self._logits(x, logits, inputs), dim=-1)  # [.., E]
        top_probs, chosen = probs.topk(
            self.config.active_experts, dim=-1, sorted=False
        )  # [.., k/p]
        gates = torch.zeros_like(probs).scatter(
            -1, chosen, top_probs / top_probs.sum(-1, keepdim=True)
        )
        self._record(chosen, inputs)
        aux = {}
        if self.training and self.config.aux_loss_coef > 0:
            aux["balance"] = self._switch_loss(probs, chosen, inputs)
        return Routing(expand_experts(gates, self.config.expert_rank), aux)

    def _switch_loss(self, probs: Tensor, chosen: Tensor, inputs: RoutingInputs) -> Tensor:
        """E * sum_e f_e P_e (Switch Transformer), over real tokens only."""
        num_experts = probs.shape[-1]
        weights = inputs.token_weights(probs.shape[:-1])
        if weights is None:
            weights = torch.ones(probs.shape[:-1], device=probs.device, dtype=probs.dtype)
        weights = weights.to(probs.dtype).reshape(-1)  # [T]
        total = weights.sum().clamp_min(1.0)
        flat_probs = probs.reshape(-1, num_experts)  # [T, E]
        mean_prob = (flat_probs * weights[:, None]).sum(0) / total  # P_e
        picked = torch.zeros_like(flat_probs).scatter(-1, chosen.reshape(-1, chosen.shape[-1]), 1.0)
        fraction = (picked * weights[:, None]).sum(0) / (total * chosen.shape[-1])  # f_e, sums to 1
        return num_experts * (fraction.detach() * mean_prob).sum()


class SigmoidBiasTopKRouter(_BalanceBiasRouter):
    """smora: sigmoid scores h, top-(k/p) of h + b, gate (k/p) z_e / sum_sel z."""

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config, config.num_expert_blocks)
        self.gate = nn.Linear(in_features, config.num_expert_blocks, bias=False)
        # The gate as one autograd node with a hand-written backward (gates.py); False runs
        # the straightforward ops below, which the tests compare it with.
        self.fused_gate = True

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        logits = self._logits(x, logits, inputs)
        config = self.config
        if self.fused_gate:
            output, chosen = SigmoidTopKGate.apply(
                z,
                logits,
                self.balance_bias,
                config.active_experts,
                config.expert_rank,
                config.gate_uses_bias,
                config.scaling,
            )
            self._record(chosen, inputs)
            return Routing(None, {}, output)
        active = config.active_experts
        scores = torch.sigmoid(logits)  # h: [.., E]
        biased = scores + self.balance_bias
        top_biased, chosen = biased.topk(active, dim=-1, sorted=False)  # [.., k/p]
        top = top_biased if config.gate_uses_bias else scores.gather(-1, chosen)
        gates = torch.zeros_like(scores).scatter(
            -1, chosen, active * top / top.sum(-1, keepdim=True)
        )
        self._record(chosen, inputs)
        return Routing(expand_experts(gates, config.expert_rank), {})


class ImplicitRouter(_BalanceBiasRouter):
    """flylora: the frozen sparse A is the router; top-k of |Ax + d| (or Ax + d), 0/1 mask."""

    trains_a = False

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config, config.r)

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        with torch.no_grad():
            scores = z + self.balance_bias
            if self.config.topk_by == "abs":
                scores = scores.abs()
            chosen = scores.topk(
                self.config.activated_rank, dim=-1, sorted=False
            ).indices  # [.., k]
            mask = torch.zeros_like(z).scatter(-1, chosen, 1.0)
        self._record(chosen, inputs)
        return Routing(mask, {})


class TaskPrefixRouter(Router):
    """more: per task, a learned nested rank prefix A[:e], B[:, :e] (straight-through)."""

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config)
        if not config.task_names:
            raise AdapterError(
                "method 'more' routes by task: set `task_names` (the recipe's tasks)"
            )
        rank = config.r
        self.task_embedding = nn.Parameter(torch.empty(len(config.task_names), in_features))
        self.selector = nn.Linear(in_features, rank)
        position = torch.arange(1, rank + 1, dtype=torch.float64)
        factors = (
            (position / rank) ** 2 if config.rank_scaling == "linear" else torch.ones_like(position)
        )
        # c_j^2: the linear factor c_j = j/R scales both A's row j and B's column j.
        self.register_buffer("rank_factors", factors.float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.task_embedding, std=0.01)
        self.selector.reset_parameters()

    def task_gates(self) -> tuple[Tensor, Tensor]:
        """([tasks, R] straight-through rank weights, [tasks] chosen prefix length - 1)."""
        probs = torch.softmax(at_least_float32(self.selector(self.task_embedding)), dim=-1)
        choice = probs.argmax(dim=-1)  # e* - 1
        straight = F.one_hot(choice, probs.shape[-1]).to(probs.dtype) + probs - probs.detach()
        gate = straight.gather(-1, choice[:, None])  # [T, 1], forward value exactly 1
        ranks = torch.arange(probs.shape[-1], device=probs.device)
        prefix = (ranks[None, :] <= choice[:, None]).to(probs.dtype)  # [T, R]
        return gate * prefix * self.rank_factors, choice

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        if inputs.task_ids is None:
            raise AdapterError(
                "method 'more' routes by task: call the model inside "
                "smora_cli.routing_context(model, task_ids=...)"
            )
        task_ids = inputs.task_ids.to(x.device)
        if task_ids.numel() == 1:  # one task for the whole batch
            task_ids = task_ids.reshape(1).expand(x.shape[0])
        if x.dim() >= 2 and x.shape[0] != task_ids.shape[0]:
            raise AdapterError(
                f"task_ids has {task_ids.shape[0]} entries for a batch of {x.shape[0]}"
            )
        weights, _ = self.task_gates()
        weights = weights[task_ids]  # [B, R]
        weights = weights.view(task_ids.shape[0], *([1] * (x.dim() - 2)), -1)
        aux = {}
        if self.training:
            aux["contrastive"] = self._contrastive_loss(x, task_ids, inputs)
        return Routing(weights, aux)

    def _contrastive_loss(self, x: Tensor, task_ids: Tensor, inputs: RoutingInputs) -> Tensor:
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])  # [B, S, in]
        real = inputs.token_weights(tokens.shape[:2])
        # The first real token: left-padded (causal-LM) rows start with padding.
        first_index = real.argmax(-1) if real is not None else torch.zeros_like(task_ids)
        first = tokens[torch.arange(tokens.shape[0], device=x.device), first_index]  # [B, in]
        logits = F.normalize(first, dim=-1) @ F.normalize(self.task_embedding, dim=-1).T
        return F.cross_entropy(logits / self.config.contrastive_temperature, task_ids)

    def static_weights(self, task_id: int | None) -> Tensor:
        if task_id is None:
            raise AdapterError(
                f"a 'more' adapter folds per task: name one of {self.config.task_names}"
            )
        with torch.no_grad():
            weights, _ = self.task_gates()
        return weights[task_id]

    def chosen_ranks(self) -> list[int]:
        """e* per task: the learned rank of each task in this layer."""
        with torch.no_grad():
            _, choice = self.task_gates()
        return [int(c) + 1 for c in choice.tolist()]


class DenseSoftmaxRouter(Router):
    """hydra: every B head active, weighted by softmax(W_r x) (HydraLoRA)."""

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config)
        self.heads = config.hydra_heads
        self.gate = nn.Linear(in_features, self.heads, bias=False)

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        return Routing(torch.softmax(self._logits(x, logits, inputs), dim=-1), {})  # [.., heads]

    def static_weights(self, task_id: int | None) -> Tensor:
        raise cannot_fold_error(self.config.method)


ROUTERS: dict[str, type[Router]] = {
    "none": Router,
    "softmax_topk": SoftmaxTopKRouter,
    "sigmoid_bias_topk": SigmoidBiasTopKRouter,
    "implicit": ImplicitRouter,
    "task_prefix": TaskPrefixRouter,
    "dense_softmax": DenseSoftmaxRouter,
}

METHOD_ROUTER = {
    "lora": "none",
    "moe-lora": "softmax_topk",
    "smora": "sigmoid_bias_topk",
    "flylora": "implicit",
    "more": "task_prefix",
    "hydra": "dense_softmax",
}


def build_router(in_features: int, config: AdapterConfig) -> Router:
    """The router of `config.method` for a layer with `in_features` inputs."""
    name = METHOD_ROUTER.get(config.method)
    if name is None:
        raise AdapterError(
            f"no router for method {config.method!r}; known: {sorted(METHOD_ROUTER)}"
        )
    return ROUTERS[name](in_features, config)
