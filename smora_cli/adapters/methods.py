"""What each adapter method can do, in one table that the rest of smora asks.

Code outside smora_cli/adapters/ asks a capability (`method_of(name).foldable`) instead of
testing method names, so a new method is described here once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """The capabilities of one method of METHODS.md.

    Attributes:
        foldable: its gate does not depend on the token, so the adapter folds into the base
            weights as one fixed matrix (`more`: one per task).
        token_routed: its router picks k of the r ranks per token, so it needs `k` (at most r;
            k = r is the dense case), and r and k multiples of the rank per expert.
        task_routed: its gate is chosen by the task (`task_names`: the recipe's tasks).
        trains_a: A is learned; otherwise a frozen sparse random draw seeded by `a_seed`.
        learned_gate: a learned linear gate over the token routes it (what
            `center_router_input` centres).
        default_balance_rate: its balance-bias step u (0: it has no balance bias).
    """

    name: str
    foldable: bool = False
    token_routed: bool = False
    task_routed: bool = False
    trains_a: bool = True
    learned_gate: bool = False
    default_balance_rate: float = 0.0


METHODS_TABLE: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lora", foldable=True),
        Method("moe-lora", token_routed=True, learned_gate=True),
        Method("smora", token_routed=True, learned_gate=True, default_balance_rate=1e-5),
        Method("flylora", token_routed=True, trains_a=False, default_balance_rate=1e-3),
        Method("more", foldable=True, task_routed=True),
        Method("hydra", learned_gate=True),
    )
}
METHODS = tuple(METHODS_TABLE)


def method_of(name: str) -> Method:
    """The capabilities of method `name` (one of `METHODS`)."""
    return METHODS_TABLE[name]


def methods_where(capability: str) -> tuple[str, ...]:
    """The names of the methods that have `capability` (a boolean field of `Method`)."""
    return tuple(name for name, m in METHODS_TABLE.items() if getattr(m, capability))
