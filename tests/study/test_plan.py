"""The study's plans (smora_cli/study/plan.py): the exact `smora` commands of each part."""

from pathlib import Path

from smora_cli.study.plan import PARTS, Study, plan_part

STUDY = Study(recipes=Path("configs"), out=Path("runs/study"))


def shells(part, study=STUDY):
    return [run.shell() for run in plan_part(study, part)]


def test_glue_mixture_runs_four_adapters_times_three_seeds():
    commands = shells("glue-mixture")
    assert len(commands) == 12
    assert commands[0] == (
        "smora train configs/study/glue_mixture.yaml adapter.method=more train.seed=1 "
        "train.output_dir=runs/study/glue/more-seed1"
    )
    assert commands[8] == (
        "smora train configs/study/glue_mixture.yaml adapter.method=moe-lora adapter.r=16 "
        "adapter.expert_rank=4 adapter.k=8 train.seed=3 train.output_dir=runs/study/glue/moe-lora-seed3"
    )
    assert commands[-1].endswith("adapter.method=smora adapter.r=64 adapter.k=8 train.seed=3 "
                                 "train.output_dir=runs/study/glue/smora-seed3")  # fmt: skip


def test_glue_single_sets_task_rank_and_alpha_2r():
    runs = plan_part(STUDY, "glue-single")
    assert len(runs) == 4 * 5 * 3
    rte = next(run for run in runs if run.name == "rte-r4-seed2")
    assert rte.shell() == (
        "smora train configs/study/glue_single.yaml "
        "'tasks=[{name: rte, source: \"glue:rte\"}]' adapter.r=4 adapter.alpha=8 train.seed=2 "
        "train.output_dir=runs/study/glue-single/rte-r4-seed2"
    )
    assert rte.group == "rte-r4" and rte.seed == 2
    assert rte.result == Path("runs/study/glue-single/rte-r4-seed2/eval_validation.json")


def test_decoder_granularity_is_one_sweep_cell_per_run():
    runs = plan_part(STUDY, "decoder-granularity")
    # smora and moe-lora at p = 8, 1 and LoRA r=8, r=64: 6 cells per seed
    assert len(runs) == 18
    assert runs[0].shell() == (
        "smora sweep-granularity configs/study/decoder_granularity.yaml --expert-ranks 8,1 "
        "--methods smora,moe-lora --baselines lora:8,lora:64 --seeds 1 "
        "--out runs/study/decoder-granularity --cell 0"
    )
    assert [run.group for run in runs[:6]] == [
        "smora-p8", "smora-p1", "moe-lora-p8", "moe-lora-p1", "lora-r8", "lora-r64"
    ]  # fmt: skip
    assert runs[7].result == Path("runs/study/decoder-granularity/cells/smora-p1-seed2/cell.json")


def test_minilm_granularity_keeps_the_earlier_grid_on_the_encoder():
    runs = plan_part(STUDY, "minilm-granularity")
    assert len(runs) == (2 * 4 + 2) * 3
    assert runs[-1].shell() == (
        "smora sweep-granularity configs/study/mixture.yaml --expert-ranks 8,4,2,1 "
        "--methods smora,moe-lora --baselines lora:8,lora:64 --seeds 3 "
        "--out runs/study/minilm-granularity --cell 9"
    )


def test_decoder_merging_trains_merges_then_scores_each_task():
    runs = plan_part(STUDY, "decoder-merging")
    trains = [run for run in runs if run.command == "train"]
    merges = [run for run in runs if run.command == "merge"]
    evals = [run for run in runs if run.command == "eval"]
    # LoRA merged three ways, FlyLoRA (distinct A, shared A) by the mean only; 4 tasks
    assert (len(trains), len(merges), len(evals)) == (3 * 3 * 4, 5 * 3, 5 * 3 * 4)
    seeds = {run.name: run for run in trains}
    assert "adapter.a_seed" not in seeds["lora-rte-seed1"].shell()
    assert "adapter.k=8 adapter.a_seed=2" in seeds["flylora-word_analogy-seed1"].shell()
    assert "adapter.a_seed=0" in seeds["flylora-shared-a-word_analogy-seed1"].shell()
    ties = next(run for run in merges if run.name == "lora-ties-seed2")
    assert ties.shell() == (
        "smora merge runs/study/decoder-merging/merge-configs/lora-ties-seed2.yaml "
        "runs/study/decoder-merging/merged/lora-ties-seed2"
    )
    assert ties.config["output"] == "model" and ties.config["parameters"]["density"] == 0.5
    assert [m["adapter"] for m in ties.config["models"]] == [
        f"runs/study/decoder-merging/lora-{task}-seed2/adapter"
        for task in ("sentiment", "qa_topic", "word_analogy", "rte")
    ]
    scored = {run.name: run for run in evals}
    assert scored["lora-ties-seed2-on-rte"].shell() == (
        "smora eval runs/study/decoder-merging/lora-rte-seed2 "
        "--model runs/study/decoder-merging/merged/lora-ties-seed2 --no-adapter "
        "--output-path runs/study/decoder-merging/merged/lora-ties-seed2/eval_rte.json"
    )
    assert scored["flylora-mean-seed1-on-qa_topic"].shell() == (
        "smora eval runs/study/decoder-merging/flylora-qa_topic-seed1 "
        "--adapter runs/study/decoder-merging/merged/flylora-mean-seed1 "
        "--output-path runs/study/decoder-merging/merged/flylora-mean-seed1/eval_qa_topic.json"
    )
    assert scored["lora-ties-seed2-on-rte"].group == "lora:ties"
    # every run comes after the runs it reads
    position = {run.name: i for i, run in enumerate(runs)}
    assert position["lora-rte-seed2"] < position["lora-ties-seed2"]
    assert position["lora-ties-seed2"] < position["lora-ties-seed2-on-rte"]


def test_decoder_router_overrides_the_quickstart():
    commands = shells("decoder-router")
    assert len(commands) == 9
    assert commands[0] == (
        "smora train configs/quickstart_lm.yaml adapter.balance_rate=1e-5 train.log_steps=10 "
        "train.seed=1 train.output_dir=runs/study/decoder-router/balance-1e-5-seed1"
    )
    assert "adapter.center_router_input=true" in commands[-1]


def test_quick_plans_are_small_and_short_and_overrides_come_last():
    quick = Study(out=Path("/tmp/q"), seeds=(1,), overrides=("model.max_length=32",), quick=True)
    sizes = {part: len(plan_part(quick, part)) for part in PARTS}
    assert sizes == {
        "glue-mixture": 2,
        "glue-single": 2,
        "decoder-granularity": 2,
        "decoder-merging": 3 * 2 + 3 * 1 + 3 * 2,  # one merge method per set
        "decoder-router": 1,
        "minilm-granularity": 2,
    }
    (router,) = plan_part(quick, "decoder-router")
    assert router.args[-8:] == (
        "train.max_steps=2",
        "train.save_steps=2",
        "train.log_steps=1",
        "eval.limit=4",
        "eval.baseline=false",
        "model.max_length=32",
        "train.seed=1",
        "train.output_dir=/tmp/q/decoder-router/balance-1e-5-seed1",
    )


def test_every_planned_train_and_sweep_command_makes_a_valid_recipe():
    from smora_cli.recipe import load_recipe

    study = Study(recipes=Path(__file__).resolve().parents[2] / "configs", seeds=(1,))
    checked = 0
    for part in PARTS:
        for run in plan_part(study, part):
            if run.command in ("train", "sweep-granularity"):
                recipe = load_recipe(run.positional[0], list(run.positional[1:]))
                if run.command == "train":  # the run directory is the one the study reads
                    assert (recipe.output_dir, recipe.train.seed) == (run.out, 1)
                checked += 1
    assert checked == 4 + 20 + 6 + 12 + 3 + 10
