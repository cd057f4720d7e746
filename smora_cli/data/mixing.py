"""Multi-task mixing: sampling rates per strategy and a seeded, stateless batch plan.

Rates (n_t = training examples of task t):
    proportional  p_t ∝ n_t
    capped        p_t ∝ min(n_t, K)            (T5's examples-proportional mixing with cap K)
    temperature   p_t ∝ n_t^(1/T)
    uniform       p_t = 1 / #tasks
    more          p_t ∝ exp(n_t / Σ n)         (MoRE; each batch holds a single task)

`MixturePlan` decides, for every micro-step, which (task, example) fills each slot of the
global micro-batch. It is a pure function of (sizes, rates, seed), so a resumed run continues
at step N with exactly the batches an uninterrupted run would have seen, and every process
takes its own slice of the same global batch. Within a task, examples are drawn without
replacement, one seeded permutation per pass over the task.

`datasets.interleave_datasets` samples per example with given probabilities, but it cannot make
task-homogeneous batches (MoRE), its `all_exhausted_without_replacement` mode ignores the
probabilities, and resuming it exactly needs iterable-dataset state; hence this plan.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("proportional", "capped", "temperature", "uniform", "more")


def mixing_rates(
    sizes: list[int], strategy: str, *, cap: int | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Sampling probability of each task under `strategy` (sums to 1)."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0 or (n <= 0).any():
        raise ValueError(f"every task needs at least one example, got sizes {sizes}")
    if strategy == "proportional":
        weights = n
    elif strategy == "capped":
        if cap is None or cap < 1:
            raise ValueError("capped mixing needs a positive cap")
        weights = np.minimum(n, cap)
    elif strategy == "temperature":
        weights = n ** (1.0 / temperature)
    elif strategy == "uniform":
        weights = np.ones_like(n)
    elif strategy == "more":
        weights = np.exp(n / n.sum())
    else:
        raise ValueError(f"unknown mixing strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return weights / weights.sum()


class MixturePlan:
    """The (task, example) of every slot of every global micro-batch, fixed by the seed.

    Args:
        sizes: number of training examples per task.
        rates: sampling probability per task (`mixing_rates`).
        global_batch: examples per micro-step summed over processes.
        num_steps: micro-steps to plan (optimizer steps x gradient accumulation).
        seed: the run's seed.
        homogeneous: one task per micro-batch (MoRE) instead of one draw per example.
    """

    def __init__(
        self,
        sizes: list[int],
        rates: np.ndarray,
        *,
        global_batch: int,
        num_steps: int,
        seed: int,
        homogeneous: bool = False,
    ):
        self.sizes = list(sizes)
        self.global_batch = global_batch
        self.seed = seed
        rng = np.random.default_rng([seed, 0x5EED])
        if homogeneous:
            per_step = rng.choice(len(sizes), size=num_steps, p=rates)
            self.tasks = np.repeat(per_step[:, None], global_batch, axis=1)  # [steps, G]
        else:
            self.tasks = rng.choice(len(sizes), size=(num_steps, global_batch), p=rates)
        self.draws = self._draw_numbers(self.tasks.ravel()).reshape(self.tasks.shape)
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    @staticmethod
    def _draw_numbers(flat_tasks: np.ndarray) -> np.ndarray:
        """j such that slot i is the j-th draw (0-based) from its task, in plan order."""
        draws = np.empty_like(flat_tasks)
        for task in np.unique(flat_tasks):
            where = np.nonzero(flat_tasks == task)[0]
            draws[where] = np.arange(where.size)
        return draws

    @property
    def num_steps(self) -> int:
        return self.tasks.shape[0]

    def _example(self, task: int, draw: int) -> int:
        size = self.sizes[task]
        epoch, offset = divmod(int(draw), size)
        key = (task, epoch)
        if key not in self._permutations:
            rng = np.random.default_rng([self.seed, task, epoch])
            self._permutations[key] = rng.permutation(size)
        return int(self._permutations[key][offset])

    def batch(self, step: int, *, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
        """(task, example index) pairs of this process's slice of micro-step `step`."""
        per_process = self.global_batch // world_size
        slots = range(rank * per_process, (rank + 1) * per_process)
        return [
            (int(self.tasks[step, s]), self._example(self.tasks[step, s], self.draws[step, s]))
            for s in slots
        ]

    def task_counts(self, end_step: int) -> np.ndarray:
        """Examples of each task in micro-steps [0, end_step) over all processes."""
        return np.bincount(self.tasks[:end_step].ravel(), minlength=len(self.sizes))
