"""granularity.png comes with the `plot` extra (matplotlib); without it a sweep writes its
tables and says how to get the plot."""

import importlib.util

import pytest

from smora_cli.sweep import write_results

RECORD = {
    "index": 0, "name": "smora-p1-seed0", "method": "smora", "expert_rank": 1, "experts": 4,
    "k": 2, "r": 4, "active_experts": 2, "seed": 0, "baseline": False, "tasks": {"t": 0.5},
    "average": 0.5, "trainable_params": 10, "activated_params": 5, "train_seconds": 1.0,
    "router_entropy": 0.9, "router_max_load": 0.3,
}  # fmt: skip


def test_without_matplotlib_the_tables_are_written(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    paths = write_results([RECORD], ["t"], tmp_path)
    assert sorted(paths) == ["csv", "json", "markdown"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "results.csv",
        "results.json",
        "results.md",
    ]


def test_with_matplotlib_the_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib", reason="the test extra installs the plot extra")
    paths = write_results([RECORD], ["t"], tmp_path)
    assert paths["plot"] == tmp_path / "granularity.png"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
