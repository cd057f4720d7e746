"""Routers: how each method computes the gate g over the r ranks of one adapter.

Every router maps the adapter input `x [.., in]` and its projection `z = A x [.., r]` to
`Routing.weights`, broadcastable to `[.., r]` (zero for inactive ranks), or to `[.., heads]`
for the shared-A head layout of HydraLoRA. The layer never branches on the router type.

Load-balancing biases (smora, flylora) are buffers that change only in
`apply_step_counts`, which the trainer reaches once per optimizer step through
`smora_cli.adapters.state.on_optimizer_step`; forward passes only count selections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smora_cli.adapters.config import AdapterConfig
from smora_cli.adapters.gates import (
    SigmoidTopKGate,
    at_least_float32,
    expand_experts,
    gated,
)
from smora_cli.adapters.task_gates import sibling_task_gates
from smora_cli.errors import AdapterError


@dataclass
class RoutingInputs:
    """Per-batch routing inputs, set on the layers by `routing_context` for one call.

    Attributes:
        task_ids: [batch] task index into `AdapterConfig.task_names` (task-routed methods).
        token_masks: [batch, seq] masks of real (non-padding) tokens; a layer uses the one
            whose shape matches its input, so encoder and decoder masks can travel together.

    What the routers derive from the masks (token weights, the weight of each pick, the
    first real token of each row) is the same for every layer of a model, so the first layer
    that asks computes it and the others reuse it: the masks must not change while one
    `RoutingInputs` is in use.
    """

    task_ids: Tensor | None = None
    token_masks: tuple[Tensor, ...] = ()
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _cached(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        value = self._derived.get(key)
        if value is None:
            value = self._derived[key] = make()
        return value

    def token_weights(self, lead_shape: torch.Size) -> Tensor | None:
        """[*lead_shape] float weights of real tokens, or None when no mask fits."""
        if not any(m.shape == lead_shape for m in self.token_masks):
            return None
        return self._cached(("weights", lead_shape), lambda: self._mask_union(lead_shape))

    def _mask_union(self, lead_shape: torch.Size) -> Tensor:
        matching = [m for m in self.token_masks if m.shape == lead_shape]
        mask = matching[0].bool()
        for other in matching[1:]:  # same-shaped encoder/decoder masks: count either
            mask = mask | other.bool()
        return mask.float()

    def pick_weights(self, chosen: Tensor, like: Tensor) -> Tensor | None:
        """[chosen.numel()] weight of each pick in `chosen` [.., kk] (its token's weight) in
        `like`'s dtype and device, or None when no mask fits (every pick counts 1)."""
        weights = self.token_weights(chosen.shape[:-1])
        if weights is None:
            return None
        picks = chosen.shape[-1]
        key = ("picks", chosen.shape, like.dtype, like.device)
        return self._cached(
            key,
            lambda: weights.to(like).unsqueeze(-1).expand(*weights.shape, picks).reshape(-1),
        )

    def first_token_rows(self, batch: int, seq: int, device: torch.device) -> Tensor:
        """[batch] row of each sequence's first real token in its [batch * seq] tokens
        (left-padded causal-LM rows start with padding; without a mask, position 0)."""

        def rows() -> Tensor:
            starts = torch.arange(batch, device=device) * seq
            real = self.token_weights(torch.Size((batch, seq)))
            return starts if real is None else starts + real.argmax(-1).to(device)

        return self._cached(("first", batch, seq, device), rows)

    def first_tokens(self, x: Tensor, *, shared: bool = True) -> Tensor:
        """[B, in] each sequence's first real token in x [B, S, in].

        With `shared`, layers that read the same input tensor (q, k and v; gate and up) get
        the same selection: its backward, a [B * S, in] scatter added into x's gradient, runs
        once. Only the last input is kept, so no activation outlives its layers for long.
        """
        last = self._derived.get("first-tokens")
        if shared and last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        tokens = x.reshape(-1, x.shape[-1])  # [B * S, in]
        batch = x.shape[0]
        rows = self.first_token_rows(batch, tokens.shape[0] // batch, x.device)
        first = tokens.index_select(0, rows)
        self._derived["first-tokens"] = (x, x._version, first)
        return first


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
        # The weight of a pick when no mask is given, expanded (never copied) to every pick.
        self.register_buffer("one", torch.ones(1), persistent=False)

    def record(self, chosen: Tensor, pick_weights: Tensor | None) -> None:
        """Add picks to `pending` in one op. chosen: [.., kk] expert indices; pick_weights:
        [chosen.numel()] (1 for a real token's pick, 0 for padding) or None (every pick 1)."""
        flat = chosen.reshape(-1)
        self.pending.scatter_add_(0, flat, self._weights(flat, pick_weights))

    def count(self, chosen: Tensor, pick_weights: Tensor | None) -> Tensor:
        """[E] picks of this call alone (what `record` adds), without recording them."""
        flat = chosen.reshape(-1)
        zeros = torch.zeros_like(self.pending)
        return zeros.scatter_add_(0, flat, self._weights(flat, pick_weights))

    def _weights(self, flat: Tensor, pick_weights: Tensor | None) -> Tensor:
        return self.one.expand(flat.numel()) if pick_weights is None else pick_weights


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
            self.counts.record(chosen, inputs.pick_weights(chosen, self.counts.pending))


class _BalanceBiasRouter(_CountingRouter):
    """Adds DeepSeek-style auxiliary-loss-free balancing: a bias that only affects selection."""

    def __init__(self, in_features: int, config: AdapterConfig, num_experts: int):
        super().__init__(in_features, config, num_experts)
        self.register_buffer("balance_bias", torch.zeros(num_experts))


@torch.no_grad()
def apply_step_counts(routers: list[Router], counts: list[Tensor]) -> None:
    """Move the balance biases of `routers` by their all-reduced counts of one optimizer step.

    b_e <- b_e + u * sign(mean(c) - c_e): under-used experts become more likely. (No counts,
    e.g. in evaluation, give sign(0) = 0: no move and no host sync.) Biases of one size and
    rate move in one stacked update: a few ops per step instead of five per layer.
    """
    groups: dict[tuple, list[tuple[_BalanceBiasRouter, Tensor]]] = {}
    for router, step_counts in zip(routers, counts, strict=True):
        rate = router.config.effective_balance_rate
        if isinstance(router, _BalanceBiasRouter) and rate > 0:
            key = (rate, step_counts.numel(), step_counts.device, step_counts.dtype)
            groups.setdefault(key, []).append((router, step_counts))
    for (rate, *_), members in groups.items():
        stacked = torch.stack([step_counts for _, step_counts in members])  # [layers, E]
        moves = rate * torch.sign(stacked.mean(-1, keepdim=True) - stacked)
        torch._foreach_add_([router.balance_bias for router, _ in members], list(moves))


class SoftmaxTopKRouter(_CountingRouter):
    """moe-lora: softmax over E experts, top-(k/p), renormalised; Switch balance loss.

    The renormalised top-(k/p) of the softmax is the softmax of the top-(k/p) logits (softmax
    is monotone and its normaliser cancels), so the full softmax is computed only for the
    Switch loss, in training. (A hand-written backward, as SMoRA's gate has, measured no
    faster here: the few autograd nodes left cost less than a Python autograd.Function.)
    """

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config, config.num_expert_blocks)
        self.gate = nn.Linear(in_features, config.num_expert_blocks, bias=False)

    def forward(
        self, x: Tensor, z: Tensor, inputs: RoutingInputs, logits: Tensor | None = None
    ) -> Routing:
        logits = self._logits(x, logits, inputs)
        config = self.config
        top, chosen = logits.topk(config.active_experts, dim=-1, sorted=False)  # [.., k/p]
        selected = torch.softmax(top, dim=-1) * config.scaling  # s * g at the chosen experts
        gate = torch.zeros_like(logits).scatter(-1, chosen, selected).to(z.dtype)  # [.., E]
        aux = {}
        if self.training and config.aux_loss_coef > 0:
            picks = self.counts.count(chosen, inputs.pick_weights(chosen, self.counts.pending))
            self.counts.pending += picks
            aux["balance"] = self._switch_loss(logits, picks, inputs)
        else:
            self._record(chosen, inputs)
        return Routing(None, aux, gated(z, gate, config.expert_rank))

    def _switch_loss(self, logits: Tensor, picks: Tensor, inputs: RoutingInputs) -> Tensor:
        """E * sum_e f_e P_e (Switch Transformer), over real tokens only.

        picks: [E] this call's (weighted) picks per expert, so f_e = picks_e / (tokens * k/p).
        """
        num_experts = logits.shape[-1]
        probs = torch.softmax(logits, dim=-1).reshape(-1, num_experts)  # [T, E]
        weights = inputs.token_weights(logits.shape[:-1])
        if weights is None:
            total = float(max(probs.shape[0], 1))
            mean_prob = probs.sum(0) / total  # P_e
        else:  # products and sums, not matmuls: autocast would round these to bf16
            weights = weights.reshape(-1, 1).to(probs)
            total = weights.sum().clamp_min(1.0)
            mean_prob = (probs * weights).sum(0) / total
        fraction = picks.to(probs) / (total * self.config.active_experts)  # f_e, sums to 1
        return num_experts * (fraction * mean_prob).sum()


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
        with torch.no_grad():  # z = A x with A frozen: nothing here is differentiated
            scores = z + self.balance_bias
            if self.config.topk_by == "abs":
                scores.abs_()
            chosen = scores.topk(
                self.config.activated_rank, dim=-1, sorted=False
            ).indices  # [.., k]
            # The 0/1 mask with the scaling already in it: s * z * mask in one multiply.
            output = z * torch.zeros_like(z).scatter_(-1, chosen, self.config.scaling)
        self._record(chosen, inputs)
        return Routing(None, {}, output)


class TaskPrefixRouter(Router):
    """more: per task, a learned nested rank prefix A[:e], B[:, :e] (straight-through)."""

    def __init__(self, in_features: int, config: AdapterConfig):
        super().__init__(in_features, config)
        # (first real tokens [B, in], task ids [B]) of the last training forward: the
        # task-contrastive loss of every layer is computed at once by `contrastive_losses`.
        self.contrastive_inputs: tuple[Tensor, Tensor] | None = None
        # Same-width MoRE routers of this block, self included (set by `attach`), and the
        # gate a sibling computed for this one in the current forward, with its stamp.
        self.peers: list[TaskPrefixRouter] = [self]
        self._handed: tuple[tuple, Tensor] | None = None
        # False: this layer computes its own gate and first tokens (tests and the benchmark
        # compare the two).
        self.share_with_siblings = True
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
        self.register_buffer("rank_index", torch.arange(rank), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.task_embedding, std=0.01)
        self.selector.reset_parameters()

    def task_gates(self) -> tuple[Tensor, Tensor]:
        """([tasks, R] straight-through rank weights, [tasks] chosen prefix length - 1).

        In float32 whatever the autocast dtype, as the token routers decide (`_logits`).
        """
        with torch.autocast(self.rank_index.device.type, enabled=False):
            logits = self.selector(at_least_float32(self.task_embedding))
            probs = torch.softmax(at_least_float32(logits), dim=-1)
            top, choice = probs.max(dim=-1)  # p at e*, e* - 1
            # onehot(e*) + p - stopgrad(p) at e*: forward value 1, gradient that of p_{e*}.
            gate = (top + 1) - top.detach()
            prefix = torch.where(self.rank_index <= choice[:, None], self.rank_factors, 0.0)
        return gate[:, None] * prefix, choice

    def _batch_gates(self) -> Tensor:
        """This layer's [tasks, R] gate, batched with its siblings' (task_gates.py).

        The first sibling to run computes every sibling's gate and hands it over; a sibling
        takes a handed gate only if it was made in the same grad mode from its parameters as
        they are now (no optimizer step, reload or device move since), else computes anew.
        """
        handed, self._handed = self._handed, None
        if not self.share_with_siblings or len(self.peers) == 1:
            return self.task_gates()[0]
        if handed is not None and handed[0] == self._stamp():
            return handed[1]
        siblings = self.peers
        gates = sibling_task_gates(siblings, self.rank_index, self.rank_factors)
        if gates is None:
            return self.task_gates()[0]
        for sibling, gate in zip(siblings, gates, strict=True):
            if sibling is not self:
                sibling._handed = (sibling._stamp(), gate)
        return gates[siblings.index(self)]

    def clear_forward_state(self) -> None:
        """Drop what the last forward left for the loss: contrastive inputs, handed gates."""
        self.contrastive_inputs = None
        self._handed = None

    def _stamp(self) -> tuple:
        weight, embedding = self.selector.weight, self.task_embedding
        versions = (weight._version, embedding._version, self.selector.bias._version)
        return torch.is_grad_enabled(), versions, weight.data_ptr(), embedding.data_ptr()

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
        weights = self._batch_gates().index_select(0, task_ids)  # [B, R]
        weights = weights.view(task_ids.shape[0], *([1] * (x.dim() - 2)), -1)
        if self.training:
            first = inputs.first_tokens(x, shared=self.share_with_siblings)
            self.contrastive_inputs = (first, task_ids)
        return Routing(weights, {})

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


def contrastive_losses(routers: list[TaskPrefixRouter]) -> Tensor:
    """[layers] MoRE's task-contrastive loss of each router's last training forward.

    CE(cos(first real token, task embeddings) / tau, task): layers with the same shapes are
    stacked, so the normalisations, the similarity matmul and the cross-entropy run once per
    group instead of once per layer (and their backward likewise).
    """
    groups: dict[tuple, list[int]] = {}
    for index, router in enumerate(routers):
        first, _ = router.contrastive_inputs
        embedding = router.task_embedding
        key = (first.shape, first.dtype, first.device, embedding.shape, embedding.dtype)
        key += (router.config.contrastive_temperature,)
        groups.setdefault(key, []).append(index)
    losses: list[Tensor | None] = [None] * len(routers)
    for (*_, temperature), members in groups.items():
        first = torch.stack([routers[i].contrastive_inputs[0] for i in members])  # [L, B, in]
        task_ids = torch.stack([routers[i].contrastive_inputs[1] for i in members])  # [L, B]
        embedding = torch.stack([routers[i].task_embedding for i in members])  # [L, T, in]
        cosine = F.normalize(first, dim=-1) @ F.normalize(embedding, dim=-1).transpose(1, 2)
        per_example = F.cross_entropy(
            (cosine / temperature).flatten(0, 1), task_ids.flatten(), reduction="none"
        )
        for i, loss in zip(members, per_example.view(len(members), -1).mean(1), strict=True):
            losses[i] = loss
    return torch.stack(losses)


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
