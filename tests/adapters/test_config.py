"""AdapterConfig validation: impossible combinations are refused with the field named."""

import pytest

from smora_cli.adapters import AdapterConfig


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(method="magic"), "`method` must be one of"),
        (dict(method="smora", r=8), "`k` \\(activated rank\\) is required"),
        (
            dict(method="smora", r=8, k=16),
            "`k` \\(activated rank\\) must be at most r \\(8\\), got 16",
        ),
        (
            dict(method="moe-lora", r=10, k=4, expert_rank=4),
            "`r` \\(10\\) must be divisible by expert_rank",
        ),
        (
            dict(method="moe-lora", r=16, k=6, expert_rank=4),
            "`k` \\(6\\) must be divisible by expert_rank",
        ),
        (dict(method="flylora", r=8, k=2, expert_rank=2), "`expert_rank` must be 1 for flylora"),
        (dict(method="lora", r=8, k=4), "`k` must equal r"),
        (dict(method="lora", r=0), "`r` must be a positive integer"),
        (dict(method="lora", r=True), "`r` must be a positive integer"),
        (dict(method="lora", dropout=1.0), "`dropout` must be in"),
        (dict(method="lora", alpha=0), "`alpha` must be > 0"),
        (dict(method="flylora", r=8, k=2, topk_by="max"), "`topk_by` must be 'abs' or 'signed'"),
        (dict(method="smora", r=8, k=2, balance_rate=-1), "`balance_rate` must be >= 0"),
        (dict(method="hydra", num_experts=1), "hydra needs at least 2"),
        (dict(method="smora", r=8, k=2, num_experts=3), "leave it unset"),
        (dict(method="more", task_names=["a", "a"]), "has duplicates"),
    ],
)
def test_invalid_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


def test_derived_values():
    config = AdapterConfig(method="smora", r=64, k=8, expert_rank=2, alpha=16)
    assert (config.num_expert_blocks, config.active_experts, config.scaling) == (32, 4, 2.0)
    assert config.effective_balance_rate == 1e-5
    assert AdapterConfig(method="flylora", r=32, k=8, alpha=64).scaling == 2.0
    assert AdapterConfig(method="flylora", r=32, k=8).effective_balance_rate == 1e-3
    assert AdapterConfig(method="smora", r=8, k=2, balance_rate=0).effective_balance_rate == 0
    assert AdapterConfig(method="lora", r=8, alpha=16, use_rslora=True).scaling == pytest.approx(
        16 / 8**0.5
    )
    assert AdapterConfig(method="more", r=8, alpha=32).scaling == 4.0
    assert AdapterConfig.from_dict(config.to_dict()) == config
