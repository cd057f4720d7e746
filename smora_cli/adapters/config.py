"""`AdapterConfig`: the hyper-parameters of one rank-expert adapter, validated.

One config describes every method of METHODS.md. `k` is the activated rank, `expert_rank` the
granularity p (ranks per expert), so a method runs E = r/p experts of which k/p are active.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from smora_cli.adapters.methods import METHODS, method_of, methods_where
from smora_cli.errors import AdapterConfigError, AdapterError

DEFAULT_HYDRA_HEADS = 4
TARGET_ALL_LINEAR = "all-linear"


@dataclass
class AdapterConfig:
    """Hyper-parameters of a rank-expert adapter (names follow PEFT where PEFT has one).

    Args:
        method: one of `lora`, `moe-lora`, `smora`, `flylora`, `more`, `hydra`.
        r: total rank of the adapter (for `more`: the largest nested rank R).
        k: activated rank per token; required for `moe-lora`, `smora`, `flylora`.
        expert_rank: ranks per expert p (granularity); r and k must be multiples of it.
        alpha: LoRA alpha; the scaling is alpha/r, or alpha/k where the activated rank decides.
        dropout: dropout on the adapter input.
        target_modules: `all-linear`, a list of module names (suffix match, as PEFT) or a
            regular expression matched against the full module path.
        exclude_modules: names or regex of modules never adapted.
        use_rslora: scale by alpha/sqrt(rank) instead of alpha/rank.
        balance_rate: bias step u for `smora`/`flylora` load balancing (0 disables);
            None takes the method default (1e-5 smora, 1e-3 flylora).
        aux_loss_coef: weight of the Switch balance loss of `moe-lora`.
        topk_by: `flylora` selection by `abs` (|Ax + d|, the paper) or `signed` (released code).
        a_seed: seed of `flylora`'s frozen sparse A; give task adapters different seeds.
        gate_uses_bias: `smora` gate values from h + b (released code) or h only.
        center_router_input: learned token gates (`moe-lora`, `smora`, `hydra`) route on
            x - mean(x) instead of x, the mean a running average over training tokens.
            Off in the papers; see docs/methods.md for why LLM hidden states need it.
        rank_scaling: `more` per-rank factor j/R (`linear`) or 1 (`none`).
        task_names: tasks a `more` adapter routes by (filled from the recipe's tasks).
        contrastive_coef: weight of `more`'s task-contrastive loss.
        contrastive_temperature: temperature of that loss.
        num_experts: `hydra` only: number of B heads sharing one A.
        base_model_name_or_path: recorded in the saved adapter; loading onto a different
            model is refused by shape checks, not by name.
    """

    method: str = "lora"
    r: int = 8
    k: int | None = None
    expert_rank: int = 1
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | list[str] = TARGET_ALL_LINEAR
    exclude_modules: str | list[str] | None = None
    use_rslora: bool = False
    balance_rate: float | None = None
    aux_loss_coef: float = 0.01
    topk_by: str = "abs"
    a_seed: int = 0
    gate_uses_bias: bool = True
    center_router_input: bool = False
    rank_scaling: str = "linear"
    task_names: list[str] = field(default_factory=list)
    contrastive_coef: float = 0.1
    contrastive_temperature: float = 0.05
    num_experts: int | None = None
    base_model_name_or_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple | set):
            self.target_modules = sorted(self.target_modules)
        problems = self.problems()
        if problems:
            raise AdapterConfigError(problems)

    # ----------------------------------------------------------------- validation
    def problems(self) -> list[tuple[str, str]]:
        """Every inconsistency as (field, message); empty when the config is usable."""
        out: list[tuple[str, str]] = []
        if self.method not in METHODS:
            return [("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")]
        for name in ("r", "expert_rank"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                out.append((name, f"must be a positive integer, got {getattr(self, name)!r}"))
        if out:
            return out
        if self.k is not None and (not _is_int(self.k) or self.k < 1):
            out.append(("k", f"must be a positive integer, got {self.k!r}"))
            return out
        out += self._rank_problems()
        if not self.alpha > 0:
            out.append(("alpha", f"must be > 0, got {self.alpha}"))
        if not 0.0 <= self.dropout < 1.0:
            out.append(("dropout", f"must be in [0, 1), got {self.dropout}"))
        if self.balance_rate is not None and not self.balance_rate >= 0:
            out.append(("balance_rate", f"must be >= 0, got {self.balance_rate}"))
        if self.topk_by not in ("abs", "signed"):
            out.append(("topk_by", f"must be 'abs' or 'signed', got {self.topk_by!r}"))
        if self.rank_scaling not in ("linear", "none"):
            out.append(("rank_scaling", f"must be 'linear' or 'none', got {self.rank_scaling!r}"))
        if len(set(self.task_names)) != len(self.task_names):
            out.append(("task_names", f"has duplicates: {self.task_names}"))
        if not self.contrastive_temperature > 0:
            out.append(("contrastive_temperature", "must be > 0"))
        if self.center_router_input and not method_of(self.method).learned_gate:
            out.append(
                (
                    "center_router_input",
                    f"applies to learned token gates ({', '.join(methods_where('learned_gate'))}), "
                    f"not {self.method!r}",
                )
            )
        if self.method == "hydra" and self.num_experts is not None and self.num_experts < 2:
            out.append(("num_experts", f"hydra needs at least 2 B heads, got {self.num_experts}"))
        if self.method != "hydra" and self.num_experts not in (None, self.num_expert_blocks):
            out.append(
                (
                    "num_experts",
                    f"is r/expert_rank = {self.num_expert_blocks} for "
                    f"{self.method}; leave it unset, got {self.num_experts}",
                )
            )
        return out

    def _rank_problems(self) -> list[tuple[str, str]]:
        r, k, p = self.r, self.k, self.expert_rank
        if method_of(self.method).token_routed:
            if k is None:
                return [
                    (
                        "k",
                        f"(activated rank) is required for method {self.method!r}, "
                        f"e.g. k: {max(1, r // 8)} with r: {r}",
                    )
                ]
            if k > r:
                return [("k", f"(activated rank) must be at most r ({r}), got {k}")]
            if self.method == "flylora" and p != 1:
                return [("expert_rank", "must be 1 for flylora (each rank is an expert)")]
            if r % p:
                return [("r", f"({r}) must be divisible by expert_rank ({p})")]
            if k % p:
                return [("k", f"({k}) must be divisible by expert_rank ({p})")]
            return []
        if k is not None and k != r:
            return [
                (
                    "k",
                    f"must equal r ({r}) for method {self.method!r}, which activates "
                    f"every rank; got {k}",
                )
            ]
        if p != 1:
            return [("expert_rank", f"must be 1 for method {self.method!r}, got {p}")]
        return []

    # ------------------------------------------------------------------ derived
    @property
    def activated_rank(self) -> int:
        """k: ranks with a non-zero gate for one token."""
        return self.r if self.k is None else self.k

    @property
    def num_expert_blocks(self) -> int:
        """E = r / p for rank-partitioned methods."""
        return self.r // self.expert_rank

    @property
    def active_experts(self) -> int:
        """k / p experts chosen per token."""
        return self.activated_rank // self.expert_rank

    @property
    def hydra_heads(self) -> int:
        return self.num_experts or DEFAULT_HYDRA_HEADS

    @property
    def effective_balance_rate(self) -> float:
        if self.balance_rate is not None:
            return self.balance_rate
        return method_of(self.method).default_balance_rate

    @property
    def scaling(self) -> float:
        """s of `y = W0 x + s B diag(g) A x`: alpha over the rank that sets the scale."""
        rank = self.activated_rank if self.method in ("moe-lora", "smora") else self.r
        return self.alpha / (math.sqrt(rank) if self.use_rslora else rank)

    # ---------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterError(f"unknown adapter config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
