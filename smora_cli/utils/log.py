"""Training logs: `metrics.jsonl` (one JSON object per logging step) and router warnings."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

METRICS_NAME = "metrics.jsonl"
# An expert chosen by more than this share of tokens has taken over its layer.
COLLAPSE_TOKEN_SHARE = 0.9


class MetricsLog:
    """Averages step statistics over a logging interval and appends them to metrics.jsonl.

    On resume, entries after the resumed step (written by the killed run after its last
    checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, run_dir: Path, *, enabled: bool, start_step: int):
        self.path = run_dir / METRICS_NAME
        self.enabled = enabled
        if enabled and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.started = time.perf_counter()
        self.restart()

    def restart(self) -> None:
        """Begin a new interval (also called when the loop starts, after any baseline eval)."""
        self.steps = 0
        self.sums = _zero_sums()
        self.grad_norm = 0.0
        self.interval_start = time.perf_counter()
        self.lr = 0.0

    @property
    def tokens(self) -> int:
        return self.sums["tokens"]

    def record(self, step: int, stats: dict, *, lr: float) -> None:
        """Add one optimizer step's statistics (from `Trainer._optimizer_step`)."""
        self.steps += 1
        self.grad_norm += stats["grad_norm"]  # of the synchronised gradients: the same everywhere
        self.lr = lr
        _add_sums(self.sums, stats)

    def combine(self, gathered: list[dict]) -> None:
        """Make the interval's sums those of every process (`gathered`: each one's `sums`), so
        the entry is the whole job's: the loss per example or target token over all of them,
        each task's likewise, aux losses averaged over all micro-batches."""
        self.sums = _zero_sums()
        for sums in gathered:
            _add_sums(self.sums, sums)

    def flush(
        self,
        step: int,
        router: dict,
        examples_seen: dict[str, int],
        imbalanced: dict[str, float] | None = None,
    ) -> dict:
        """Write the interval's averages; returns the entry.

        `router` holds each routed layer's load statistics; `imbalanced` the layers whose
        busiest expert takes more than COLLAPSE_TOKEN_SHARE of the tokens, with that share.
        """
        elapsed = max(time.perf_counter() - self.interval_start, 1e-9)
        sums = self.sums
        micro = max(sums["micro_batches"], 1)
        entry = {
            "step": step,
            "loss": sums["loss_sum"] / max(sums["weight"], 1e-9),
            "lr": self.lr,
            "grad_norm": self.grad_norm / max(self.steps, 1),
            "tokens_per_s": sums["tokens"] / elapsed,
            "elapsed_s": time.perf_counter() - self.started,
            "task_loss": {
                k: v / max(sums["task_count"][k], 1e-9) for k, v in sums["task_loss"].items()
            },
            "aux": {k: v / micro for k, v in sums["aux"].items()},
            "examples_seen": examples_seen,
        }
        if router:
            entropies = [s["entropy"] for s in router.values()]
            entry["router"] = {
                "mean_entropy": sum(entropies) / len(entropies),
                "min_entropy": min(entropies),
                "max_load": max(s["max_load"] for s in router.values()),
                "imbalanced": imbalanced or {},
                "layers": router,
            }
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
        self.restart()
        return entry


def _zero_sums() -> dict:
    return {
        "loss_sum": 0.0,
        "weight": 0.0,
        "tokens": 0,
        "micro_batches": 0,
        "task_loss": {},
        "task_count": {},
        "aux": {},
    }


def _add_sums(into: dict, sums: dict) -> None:
    """Add one step's (or one process's) sums: losses and weights of examples, tokens,
    micro-batches, per-task losses and weights, aux losses summed over micro-batches."""
    for key in ("loss_sum", "weight", "tokens", "micro_batches"):
        into[key] += sums[key]
    for key in ("task_loss", "task_count", "aux"):
        for name, value in sums.get(key, {}).items():
            into[key][name] = into[key].get(name, 0.0) + value


def imbalanced_layers(router: dict, *, experts: int, active: int) -> dict[str, float]:
    """{layer: share of tokens that pick its busiest expert}, for layers above the threshold.

    Args:
        router: each routed layer's load statistics (`max_load`: the busiest expert's share
            of the expert picks).
        experts: experts per layer; `active`: how many each token picks.
    """
    if active >= experts:
        return {}
    shares = {layer: stats["max_load"] * active for layer, stats in router.items()}
    return {layer: share for layer, share in shares.items() if share > COLLAPSE_TOKEN_SHARE}


def imbalance_summary(imbalanced: dict[str, float], total_layers: int, step: int) -> str:
    """One line for the terminal; the per-layer detail is in metrics.jsonl."""
    worst = max(imbalanced, key=imbalanced.get)
    return (
        f"router imbalance at step {step}: in {len(imbalanced)} of {total_layers} routed layers "
        f"one expert takes > {COLLAPSE_TOKEN_SHARE:.0%} of tokens (worst: {worst}, "
        f"{imbalanced[worst]:.0%}); per-layer loads are in {METRICS_NAME}; see balance_rate "
        "in docs/methods.md"
    )


def quiet_libraries() -> None:
    """datasets/transformers progress bars (split generation, weight loading) are noise here."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    # Its logged parser errors arrive again as one DataError line (data/filecheck.py).
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def warn(message: str) -> None:
    """A `warning:` line on stderr: something to know that does not stop the command."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
