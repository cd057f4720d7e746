"""`smora sweep-granularity`: grid arithmetic, parameter budgets, resumable end-to-end sweep."""

import json
import os
import signal

import pytest
from torch import nn

from smora_cli.adapters import AdapterConfig, attach, count_parameters
from smora_cli.errors import Stopped, UserInputError
from smora_cli.recipe import SweepSection, recipe_from_dict
from smora_cli.sweep import cell_recipe, plan_cells, run_sweep
from smora_cli.train import Trainer
from tests.fixtures import classifier_recipe


def test_grid_arithmetic_and_skips():
    messages = []
    sweep = SweepSection(
        r=64,
        k=8,
        expert_ranks=[1, 2, 3, 4, 8, 16],
        methods=["smora", "moe-lora", "flylora"],
        baselines=["lora:8", "lora:64"],
        seeds=[1, 2],
    )
    cells = plan_cells(sweep, echo=messages.append)
    rows = [(c.method, c.expert_rank, c.experts, c.active_experts, c.seed) for c in cells]
    expected = []
    for method in ("smora", "moe-lora"):
        for p, experts, active in ((1, 64, 8), (2, 32, 4), (4, 16, 2), (8, 8, 1)):
            expected += [(method, p, experts, active, seed) for seed in (1, 2)]
    expected += [("flylora", 1, 64, 8, seed) for seed in (1, 2)]
    expected += [("lora", 1, 8, 8, seed) for seed in (1, 2)]
    expected += [("lora", 1, 64, 64, seed) for seed in (1, 2)]
    assert rows == expected
    assert [c.index for c in cells] == list(range(len(expected)))
    assert len({c.name for c in cells}) == len(cells)
    # p=3 divides neither 64 nor 8; p=16 does not divide k=8; flylora is rank-1 only.
    assert sum("smora p=3" in m for m in messages) == 1
    assert any(
        "moe-lora p=16: `k` (8) must be divisible by expert_rank (16)" in m for m in messages
    )
    assert sum(m.startswith("skipping flylora") for m in messages) == 5


@pytest.mark.parametrize(
    "sweep,message",
    [
        (SweepSection(methods=["lora"]), "is not a rank-expert method"),
        (SweepSection(baselines=["lora"]), "must look like lora:RANK"),
        (SweepSection(k=128), "must be between 1"),
        (SweepSection(expert_ranks=[3], methods=["smora"], baselines=[]), "no valid cell"),
    ],
)
def test_invalid_sweeps(sweep, message):
    with pytest.raises(UserInputError, match=message):
        plan_cells(sweep, echo=lambda *_: None)


def test_parameter_budgets_match_hand_counts(tmp_path):
    """One 32->48 linear layer: trainable and activated parameters per cell."""
    n, m, r, k = 32, 48, 16, 4
    cells = plan_cells(
        SweepSection(
            r=r,
            k=k,
            expert_ranks=[1, 2, 4],
            methods=["smora", "moe-lora", "flylora"],
            baselines=[f"lora:{k}", f"lora:{r}"],
            seeds=[0],
        ),
        echo=lambda *_: None,
    )
    for cell in cells:
        overrides = cell.overrides()
        model = attach(
            nn.Sequential(nn.Linear(n, m)), AdapterConfig(target_modules=["0"], **overrides)
        )
        counts = count_parameters(model)
        experts = cell.experts
        if cell.method == "lora":
            trainable = activated = cell.r * (n + m)
        elif cell.method == "flylora":
            trainable = r * m  # B only
            activated = r * round(n * k / r) + k * m  # the sparse A routes; k columns of B
        else:
            trainable = r * (n + m) + experts * n
            activated = k * (n + m) + experts * n
        assert (counts.adapter, counts.activated) == (trainable, activated), cell.name


def small_sweep(tmp_path):
    return SweepSection(
        r=4,
        k=2,
        expert_ranks=[1, 2],
        methods=["smora"],
        baselines=["lora:2"],
        seeds=[0],
        output_dir=str(tmp_path / "sweep"),
    )


def test_cell_recipes_change_only_adapter_and_seed(tmp_path, encoder_dir):
    base = recipe_from_dict(classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "x"))
    cells = plan_cells(small_sweep(tmp_path), echo=lambda *_: None)
    recipe = cell_recipe(base, cells[1], tmp_path / "sweep")
    assert (
        recipe.adapter.method,
        recipe.adapter.r,
        recipe.adapter.k,
        recipe.adapter.expert_rank,
    ) == ("smora", 4, 2, 2)
    assert recipe.train.lr == base.train.lr and recipe.adapter.alpha == base.adapter.alpha
    assert recipe.output_dir == tmp_path / "sweep" / "cells" / "smora-p2-seed0"
    lora = cell_recipe(base, cells[2], tmp_path / "sweep")
    assert (lora.adapter.method, lora.adapter.r, lora.adapter.k) == ("lora", 2, None)


def test_sweep_end_to_end_resumes_and_skips(tmp_path, encoder_dir, monkeypatch):
    base = recipe_from_dict(
        classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "x", max_steps=4, save_steps=2)
    )
    sweep = small_sweep(tmp_path)
    original = Trainer._optimizer_step

    def interrupted(self, step):  # SIGTERM during the second cell's 2nd step
        stats = original(self, step)
        if self.recipe.adapter.expert_rank == 2 and step == 1 and not self.resume:
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted)
    with pytest.raises(Stopped, match="cell 1 .* stopped at step 2") as info:
        run_sweep(base, sweep, echo=lambda *_: None)
    assert info.value.exit_code == 128 + signal.SIGTERM
    messages = []
    records, paths = run_sweep(base, sweep, echo=messages.append)
    assert "cell 0 (smora-p1-seed0) already finished with this recipe" in messages
    assert any("resumed from" in m for m in messages)
    assert [r["name"] for r in records] == ["smora-p1-seed0", "smora-p2-seed0", "lora-r2-seed0"]
    out = tmp_path / "sweep"
    assert sorted(p.name for p in out.iterdir()) == [
        "cells",
        "granularity.png",
        "results.csv",
        "results.json",
        "results.md",
    ]
    assert (out / "granularity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert [(r["experts"], r["active_experts"]) for r in saved] == [(4, 2), (2, 1), (2, 2)]
    assert all(set(r["tasks"]) == {"sent", "sim"} for r in saved)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"sent", "sim", "average", "trainable_params", "router_entropy"} <= set(header)
    table = (out / "results.md").read_text()
    assert "| smora | 2 | 2 | 1 | 1 |" in table and "lora r=2" in table
    mtime = (out / "cells" / "smora-p1-seed0" / "cell.json").stat().st_mtime
    one = []
    run_sweep(base, sweep, cell_index=2, echo=one.append)
    assert "cell 2 (lora-r2-seed0) already finished with this recipe" in one
    assert (out / "cells" / "smora-p1-seed0" / "cell.json").stat().st_mtime == mtime
    with pytest.raises(UserInputError, match="--cell 7 is out of range"):
        run_sweep(base, sweep, cell_index=7, echo=lambda *_: None)


def test_a_finished_cell_is_reused_only_for_the_same_recipe(
    tmp_path, encoder_dir, monkeypatch, capsys
):
    """Trial: a rerun with train.max_steps=3 train.lr=1e-2 reported the max_steps=2 results."""
    import sys

    import yaml

    from smora_cli.cli import main

    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "x", max_steps=2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    grid = [
        "--r",
        "4",
        "--k",
        "2",
        "--expert-ranks",
        "2",
        "--methods",
        "smora",
        "--baselines",
        "",
        "--seeds",
        "0",
        "--out",
        str(out),
    ]

    def sweep(*args):
        monkeypatch.setattr(sys, "argv", ["smora", "sweep-granularity", str(recipe), *grid, *args])
        with pytest.raises(SystemExit) as done:
            main()
        return done.value.code or 0, *capsys.readouterr()

    assert sweep()[0] == 0
    cell = out / "cells" / "smora-p2-seed0"
    finished = {p: p.read_bytes() for p in [cell / "cell.json", out / "results.json"]}
    code, stdout, err = sweep("train.max_steps=3", "train.lr=1e-2")
    assert code == 2 and "Traceback" not in err
    assert (
        "error: cell 0 (smora-p2-seed0) in " in err
        and "ran another recipe (train.lr: 0.005 -> 0.01; train.max_steps: 2 -> 3)" in err
        and "pass --overwrite to rerun the changed cells" in err
    )
    assert {p: p.read_bytes() for p in finished} == finished  # old results untouched
    code, stdout, _ = sweep("train.max_steps=3", "train.lr=1e-2", "--overwrite")
    assert code == 0 and "already finished" not in stdout
    resolved = yaml.safe_load((cell / "resolved_recipe.yaml").read_text())
    assert (resolved["train"]["max_steps"], resolved["train"]["lr"]) == (3, 0.01)
    assert json.loads((cell / "cell.json").read_text()) != json.loads(finished[cell / "cell.json"])
    code, stdout, _ = sweep("train.max_steps=3", "train.lr=1e-2", "--seeds", "0")
    assert code == 0 and "cell 0 (smora-p2-seed0) already finished with this recipe" in stdout


def test_empty_seed_list_and_the_slurm_example(monkeypatch, capsys):
    import re
    import sys

    from smora_cli.cli import main
    from smora_cli.commands.sweep import EXAMPLES as SWEEP_EXAMPLES
    from smora_cli.recipe import load_recipe

    monkeypatch.setattr(sys, "argv", ["smora", "sweep-granularity", "--seeds", "", "--list-cells"])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and "error: --seeds: no seed given; e.g. --seeds 1,2,3" in err
    configs = os.path.join(os.path.dirname(__file__), "..", "configs", "sweep.yaml")
    cells = plan_cells(load_recipe(configs).sweep, echo=lambda *_: None)
    assert re.search(
        r"--array=0-(\d+) scripts/slurm_sweep_array.sh configs/sweep.yaml", SWEEP_EXAMPLES
    ).group(1) == str(len(cells) - 1)
    monkeypatch.setattr(sys, "argv", ["smora", "sweep-granularity", configs, "--list-cells"])
    with pytest.raises(SystemExit) as done:
        main()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{len(cells)} cells; as a SLURM array: sbatch --array=0-{len(cells) - 1} ..."
    )


def test_flags_go_through_the_sweep_schema():
    from smora_cli.errors import RecipeError
    from smora_cli.sweep import sweep_section

    section = SweepSection()
    flagged = sweep_section(section, {"k": 4, "seeds": [7], "methods": None})
    assert (flagged.r, flagged.k, flagged.seeds, flagged.methods) == (
        64,
        4,
        [7],
        ["smora", "moe-lora", "flylora"],
    )
    assert (section.k, section.seeds) == (8, [1, 2, 3])  # the recipe's section is not touched
    with pytest.raises(RecipeError, match=r"sweep.r: expected an integer, got '64'"):
        sweep_section(section, {"r": "64"})
    with pytest.raises(RecipeError, match="sweep.rank: unknown key"):
        sweep_section(section, {"rank": 4})


def test_list_cells_lines():
    from smora_cli.sweep import cell_lines

    sweep = SweepSection(r=8, k=2, expert_ranks=[1, 2], methods=["smora"], baselines=[], seeds=[0])
    lines = cell_lines(plan_cells(sweep, echo=lambda *_: None))
    assert lines == [
        "  0  smora-p1-seed0           method=smora r=8 k=2 p=1 E=8 active=2",
        "  1  smora-p2-seed0           method=smora r=8 k=2 p=2 E=4 active=1",
        "2 cells; as a SLURM array: sbatch --array=0-1 ...",
    ]
