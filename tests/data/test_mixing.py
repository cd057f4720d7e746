"""Mixing strategies: realised task frequencies against the formulas; the plan is exact."""

import math

import numpy as np
import pytest

from smora_cli.data.mixing import MixturePlan, mixing_rates

SIZES = [1000, 300, 50]


@pytest.mark.parametrize(
    "strategy,kwargs,expected",
    [
        ("proportional", {}, [n / 1350 for n in SIZES]),
        ("capped", {"cap": 200}, [200 / 450, 200 / 450, 50 / 450]),
        (
            "temperature",
            {"temperature": 2.0},
            [math.sqrt(n) / sum(math.sqrt(m) for m in SIZES) for n in SIZES],
        ),
        ("uniform", {}, [1 / 3] * 3),
        ("more", {}, [math.exp(n / 1350) / sum(math.exp(m / 1350) for m in SIZES) for n in SIZES]),
    ],
)
def test_rates_and_realised_frequencies(strategy, kwargs, expected):
    rates = mixing_rates(SIZES, strategy, **kwargs)
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    plan = MixturePlan(
        SIZES, rates, global_batch=16, num_steps=2000, seed=3, homogeneous=strategy == "more"
    )
    counts = plan.task_counts(2000)
    realised = counts / counts.sum()
    # Binomial standard error of a frequency over 2000 independent draws (whole batches for
    # homogeneous plans), times 4.
    draws = 2000 if strategy == "more" else 32000
    tolerance = 4 * np.sqrt(np.asarray(expected) * (1 - np.asarray(expected)) / draws)
    assert np.all(np.abs(realised - expected) < tolerance), (realised, expected)


def test_temperature_one_is_proportional_and_large_is_uniform():
    np.testing.assert_allclose(
        mixing_rates(SIZES, "temperature", temperature=1.0), mixing_rates(SIZES, "proportional")
    )
    np.testing.assert_allclose(
        mixing_rates(SIZES, "temperature", temperature=1e9), [1 / 3] * 3, atol=1e-6
    )


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least one example"):
        mixing_rates([10, 0], "proportional")
    with pytest.raises(ValueError, match="needs a positive cap"):
        mixing_rates(SIZES, "capped")
    with pytest.raises(ValueError, match="unknown mixing strategy"):
        mixing_rates(SIZES, "zipf")


def test_homogeneous_batches_hold_one_task():
    plan = MixturePlan(
        SIZES, mixing_rates(SIZES, "more"), global_batch=8, num_steps=50, seed=0, homogeneous=True
    )
    for step in range(50):
        assert len({task for task, _ in plan.batch(step)}) == 1


def test_examples_without_replacement_within_a_pass():
    sizes = [7, 5]
    plan = MixturePlan(sizes, mixing_rates(sizes, "uniform"), global_batch=3, num_steps=40, seed=1)
    drawn = {0: [], 1: []}
    for step in range(40):
        for task, index in plan.batch(step):
            drawn[task].append(index)
    for task, size in enumerate(sizes):
        full_passes = len(drawn[task]) // size
        for p in range(full_passes):
            assert sorted(drawn[task][p * size : (p + 1) * size]) == list(range(size))


def test_plan_is_a_pure_function_and_shards_the_global_batch():
    rates = mixing_rates(SIZES, "temperature", temperature=2.0)
    one = MixturePlan(SIZES, rates, global_batch=8, num_steps=30, seed=5)
    two = MixturePlan(SIZES, rates, global_batch=8, num_steps=30, seed=5)
    other_seed = MixturePlan(SIZES, rates, global_batch=8, num_steps=30, seed=6)
    assert [two.batch(s) for s in range(20, 30)] == [one.batch(s) for s in range(20, 30)]
    assert [one.batch(s) for s in range(30)] != [other_seed.batch(s) for s in range(30)]
    for step in range(30):
        halves = one.batch(step, rank=0, world_size=2) + one.batch(step, rank=1, world_size=2)
        assert halves == one.batch(step)
