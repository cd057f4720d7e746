"""`smora merge`: exact folds and linear merges, TIES/DARE against hand computations, refusals."""

import re

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from smora_cli.adapters import AdapterConfig, adapter_layers, attach, load_adapter, save_adapter
from smora_cli.adapters import routing_context as routed
from smora_cli.errors import AdapterError, RecipeError, UserInputError
from smora_cli.merging.combine import combine_deltas, mean_factors
from smora_cli.merging.config import merge_config_from_dict, merge_request
from smora_cli.merging.run import export_per_task, run_merge
from tests import tiny_models as tm


def saved(tmp_path, name, config, build=tm.llama, seed=2):
    model = attach(build(), config)
    tm.randomize_adapter(model, seed=seed)
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            for param in layer.router.parameters():
                param.normal_(generator=torch.Generator().manual_seed(seed))
    save_adapter(model, tmp_path / name)
    return model


def base_dir(tmp_path, build=tm.llama):
    path = tmp_path / "base"
    if not path.exists():
        build().save_pretrained(path)
    return path


def merge(tmp_path, out, **config):
    config.setdefault("base_model", str(base_dir(tmp_path)))
    return run_merge(merge_config_from_dict(config), tmp_path / out, echo=lambda *_: None)


def delta_from_files(directory, path):
    tensors = load_file(directory / "adapter_model.safetensors")
    a = tensors[f"base_model.model.{path}.lora_A.weight"]
    b = tensors[f"base_model.model.{path}.lora_B.weight"]
    return 2.0 * b @ a  # alpha 8 / r 4


def test_linear_merge_is_the_weighted_sum_of_deltas(tmp_path):
    for i in (1, 2):
        saved(tmp_path, f"a{i}", AdapterConfig(method="lora", r=4, alpha=8), seed=i)
    out = merge(
        tmp_path,
        "merged",
        merge_method="linear",
        models=[
            {"adapter": str(tmp_path / "a1"), "parameters": {"weight": 0.3}},
            {"adapter": str(tmp_path / "a2"), "parameters": {"weight": 0.7}},
        ],
    )
    merged = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    base = dict(tm.llama().named_parameters())
    for path, _ in adapter_layers(attach(tm.llama(), AdapterConfig(r=4))):
        expected = (
            base[f"{path}.weight"]
            + 0.3 * delta_from_files(tmp_path / "a1", path)
            + 0.7 * delta_from_files(tmp_path / "a2", path)
        )
        torch.testing.assert_close(merged[f"{path}.weight"], expected, rtol=0, atol=2e-6)
    assert (out / "merge_config.yaml").is_file()


def test_linear_merge_as_adapter_is_exact_and_loads_in_peft(tmp_path):
    for i in (1, 2):
        saved(tmp_path, f"a{i}", AdapterConfig(method="lora", r=4, alpha=8), seed=i)
    models = [{"adapter": str(tmp_path / f"a{i}")} for i in (1, 2)]
    as_model = merge(tmp_path, "m", merge_method="linear", models=models)
    as_adapter = merge(tmp_path, "a", merge_method="linear", models=models, output="peft")
    batch = tm.inputs()
    expected = AutoModelForCausalLM.from_pretrained(as_model)(**batch).logits
    ours = load_adapter(tm.llama(), as_adapter)
    torch.testing.assert_close(tm.forward(ours, batch), expected, atol=1e-5, rtol=1e-5)
    peft_model = PeftModel.from_pretrained(tm.llama(), as_adapter)
    torch.testing.assert_close(peft_model(**batch).logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "build,cls", [(tm.llama, AutoModelForCausalLM), (tm.gpt2, GPT2LMHeadModel)]
)
def test_fold_equals_the_adapter_model(tmp_path, build, cls):
    model = saved(tmp_path, "lora", AdapterConfig(method="lora", r=4), build=build)
    batch = tm.inputs()
    expected = tm.forward(model, batch)
    out = merge(
        tmp_path,
        "folded",
        base_model=str(base_dir(tmp_path, build)),
        merge_method="fold",
        models=[{"adapter": str(tmp_path / "lora")}],
    )
    folded = cls.from_pretrained(out).eval()
    assert type(folded) is type(build())
    torch.testing.assert_close(folded(**batch).logits, expected, atol=1e-5, rtol=1e-5)


def test_more_folds_per_task_and_exports_every_task(tmp_path):
    config = AdapterConfig(method="more", r=4, task_names=["x", "y"])
    model = saved(tmp_path, "more", config)
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            layer.router.task_embedding.normal_(generator=torch.Generator().manual_seed(5))
    save_adapter(model, tmp_path / "more")
    batch = tm.inputs()
    fold = merge_request(
        None, tmp_path / "tasks", adapter=tmp_path / "more", base=str(base_dir(tmp_path))
    )
    outs = export_per_task(fold.config, tmp_path / "tasks", echo=lambda *_: None)
    assert [p.name for p in outs] == ["x", "y"]
    for task_id, out in enumerate(outs):
        with routed(model, task_ids=task_id, token_masks=batch["attention_mask"]):
            expected = tm.forward(model, batch)
        folded = AutoModelForCausalLM.from_pretrained(out)
        torch.testing.assert_close(folded(**batch).logits, expected, atol=1e-5, rtol=1e-5)
    # The same task as a plain LoRA adapter (rank R, the task's unused ranks zero).
    lora = merge(
        tmp_path,
        "y-lora",
        merge_method="fold",
        output="adapter",
        models=[{"adapter": str(tmp_path / "more"), "task": "y"}],
    )
    with routed(model, task_ids=1, token_masks=batch["attention_mask"]):
        expected = tm.forward(model, batch)
    torch.testing.assert_close(
        tm.forward(load_adapter(tm.llama(), lora), batch), expected, atol=1e-5, rtol=1e-5
    )


def test_ties_on_hand_made_task_vectors():
    t1 = torch.tensor([[3.0, -1.0, 0.5, 2.0]])
    t2 = torch.tensor([[-2.0, -4.0, 1.0, 0.1]])
    t3 = torch.tensor([[1.0, 2.0, -3.0, 0.2]])
    # density 0.5 keeps the 2 largest magnitudes of each: t1 [3,0,0,2], t2 [-2,-4,0,0],
    # t3 [0,2,-3,0]. Elected signs (sum): [+1, -2 -> -, -3 -> -, +2 -> +].
    # Disjoint means: col0 mean(3) (t2's -2 disagrees) = 3; col1 mean(-4) = -4;
    # col2 mean(-3) = -3; col3 mean(2) = 2. Times lambda 0.5.
    merged = combine_deltas("ties", [t1, t2, t3], [1.0, 1.0, 1.0], [0.5] * 3, scale=0.5)
    torch.testing.assert_close(merged, 0.5 * torch.tensor([[3.0, -4.0, -3.0, 2.0]]))


def test_dare_keeps_the_expectation_and_is_seeded():
    delta = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    draws = torch.stack(
        [
            combine_deltas("dare_linear", [delta], [1.0], [0.6], generator_seed=s)
            for s in range(3000)
        ]
    )
    # Each entry is delta/0.6 with probability 0.6, else 0: mean delta, std |delta| sqrt(0.4/0.6).
    tolerance = 5 * delta.abs() * (0.4 / 0.6) ** 0.5 / 3000**0.5 + 1e-6
    assert ((draws.mean(0) - delta).abs() <= tolerance).all()
    kept = (draws[0] != 0).float().mean()
    assert 0.3 < kept < 0.9
    again = combine_deltas("dare_linear", [delta], [1.0], [0.6], generator_seed=0)
    assert torch.equal(again, draws[0])
    assert not torch.equal(draws[0], draws[1])


def test_factor_mean_keeps_routing(tmp_path):
    for seed in (1, 2):
        saved(
            tmp_path,
            f"fly{seed}",
            AdapterConfig(method="flylora", r=8, k=2, a_seed=seed),
            seed=seed,
        )
    out = merge(
        tmp_path,
        "mean",
        merge_method="mean",
        output="adapter",
        models=[{"adapter": str(tmp_path / f"fly{s}")} for s in (1, 2)],
    )
    merged = load_file(out / "adapter_model.safetensors")
    one, two = (load_file(tmp_path / f"fly{s}" / "adapter_model.safetensors") for s in (1, 2))
    for key in merged:
        torch.testing.assert_close(merged[key], (one[key] + two[key]) / 2)
    model = load_adapter(tm.llama(), out)
    assert torch.isfinite(tm.forward(model, tm.inputs())).all()
    assert mean_factors([{"a": torch.ones(2)}, {"a": torch.zeros(2)}], [3.0, 1.0])[
        "a"
    ].tolist() == [0.75, 0.75]


def test_refusals(tmp_path):
    saved(tmp_path, "lora", AdapterConfig(method="lora", r=4))
    saved(tmp_path, "lora8", AdapterConfig(method="lora", r=8))
    saved(tmp_path, "lora_q", AdapterConfig(method="lora", r=4, target_modules=["q_proj"]))
    saved(tmp_path, "smora", AdapterConfig(method="smora", r=4, k=2))
    saved(tmp_path, "fly", AdapterConfig(method="flylora", r=8, k=2))
    saved(tmp_path, "more", AdapterConfig(method="more", r=4, task_names=["x"]))

    def refused(match, error=AdapterError, **config):
        with pytest.raises(error, match=match):
            merge(tmp_path, "out", **config)
        assert not (tmp_path / "out").exists(), "nothing half-written"

    two = lambda a, b: [{"adapter": str(tmp_path / a)}, {"adapter": str(tmp_path / b)}]  # noqa: E731
    refused("cannot be folded", merge_method="fold", models=[{"adapter": str(tmp_path / "smora")}])
    refused("different methods", merge_method="linear", models=two("lora", "fly"))
    refused("other modules", merge_method="linear", models=two("lora", "lora_q"))
    refused("r is 8 but 4", merge_method="mean", output="adapter", models=two("lora", "lora8"))
    refused(
        "models.0.task: .*folds per task|folds per task",
        merge_method="fold",
        models=[{"adapter": str(tmp_path / "more")}],
    )
    refused("a factor mean keeps the routers", merge_method="mean", models=two("fly", "fly"))
    with pytest.raises(RecipeError, match="output: ties merges full weight matrices"):
        merge_config_from_dict(
            {"merge_method": "ties", "output": "adapter", "models": two("lora", "lora")}
        )
    with pytest.raises(RecipeError, match="fold takes exactly one adapter"):
        merge_config_from_dict({"merge_method": "fold", "models": two("lora", "lora")})
    with pytest.raises(RecipeError, match="is not a directory"):
        merge_config_from_dict({"merge_method": "fold", "models": [{"adapter": "nope"}]})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(UserInputError, match="not empty; pass --overwrite"):
        run_merge(
            merge_config_from_dict(
                {"merge_method": "fold", "models": [{"adapter": str(tmp_path / "lora")}]}
            ),
            tmp_path / "full",
        )
    assert (tmp_path / "full" / "x").read_text() == "keep"


def test_cli_short_forms(tmp_path, monkeypatch, capsys):
    import sys

    from smora_cli.cli import main

    saved(
        tmp_path,
        "lora",
        AdapterConfig(method="lora", r=4, base_model_name_or_path=str(base_dir(tmp_path))),
    )
    saved(tmp_path, "smora", AdapterConfig(method="smora", r=4, k=2))

    def smora(*args):
        monkeypatch.setattr(sys, "argv", ["smora", "merge", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            main()
        return done.value.code or 0, capsys.readouterr()

    code, out = smora("--adapter", tmp_path / "lora", tmp_path / "folded")
    assert code == 0 and "written to" in out.out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "folded") is not None
    code, out = smora("--adapter", tmp_path / "smora", "--base", base_dir(tmp_path), tmp_path / "x")
    assert code == 2 and "cannot be folded" in out.err and "Traceback" not in out.err
    code, out = smora(tmp_path / "folded")
    assert code == 2 and "--adapter DIR" in out.err


def test_merged_classifier_adapters_keep_every_task_head(tmp_path, encoder_dir):
    """Task adapters trained apart merge into one encoder that carries every task's head."""
    import json

    from smora_cli.evaluation.job import EvalPlan, _heads_dir, _load_model
    from smora_cli.recipe import recipe_from_dict
    from smora_cli.train import run
    from tests.fixtures import classifier_recipe

    for index, task in enumerate(("sent", "sim")):
        data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / task)
        data["tasks"] = [data["tasks"][index]]
        data["adapter"] = {"method": "lora", "r": 4}
        run(recipe_from_dict(data), show_progress=False, echo=lambda *_: None)
    sources = [{"adapter": str(tmp_path / t / "adapter")} for t in ("sent", "sim")]
    for output in ("model", "adapter"):
        run_merge(
            merge_config_from_dict({"merge_method": "linear", "output": output, "models": sources}),
            tmp_path / f"merged-{output}",
            echo=lambda *_: None,
        )
        heads = json.loads((tmp_path / f"merged-{output}" / "task_heads.json").read_text())
        assert heads["tasks"] == ["sent", "sim"] and heads["num_labels"] == [2, 0]
    own = load_file(tmp_path / "sim" / "adapter" / "task_heads.safetensors")
    merged = load_file(tmp_path / "merged-model" / "task_heads.safetensors")
    assert torch.equal(merged["1.weight"], own["0.weight"])
    job = EvalPlan(
        model=str(tmp_path / "merged-model"),
        kind="classifier",
        adapter=None,
        tasks=[],
        max_length=32,
        target_max_length=8,
        output_path=tmp_path / "r.json",
        run_dir=None,
    )
    assert _heads_dir(job) == tmp_path / "merged-model"
    _, model = _load_model(job)
    assert model.task_names == ["sent", "sim"] and model.num_labels == [2, 0]
    from smora_cli.evaluation.job import EvalRequest, run_eval

    report, _ = run_eval(
        EvalRequest(
            run_dir=tmp_path / "sim",
            model=str(tmp_path / "merged-model"),
            no_adapter=True,
            output_path=tmp_path / "m.json",
        ),
        echo=lambda *_: None,
    )
    assert set(report["results"]) == {"sim"} and report["config"]["adapter"] is None
    assert "pearson" in report["results"]["sim"]


def tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_replaces_only_an_earlier_merge_output(tmp_path, monkeypatch, capsys):
    """Trial: `smora merge CONFIG OUT --overwrite` deleted its own inputs and a user's file."""
    import sys

    import yaml

    from smora_cli.cli import main

    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name).mkdir(parents=True)
        saved(runs / name, "adapter", AdapterConfig(method="lora", r=4), seed=len(name))
        (runs / name / "resolved_recipe.yaml").write_text("a: run\n")
    config = tmp_path / "merge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(base_dir(tmp_path)),
                "merge_method": "linear",
                "models": [{"adapter": str(runs / n / "adapter")} for n in ("a", "b")],
            }
        )
    )
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("x,y\n")
    before = {name: tree(tmp_path / name) for name in ("runs", "mine")}

    def smora(*args):
        monkeypatch.setattr(sys, "argv", ["smora", "merge", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            main()
        err = capsys.readouterr().err
        assert "Traceback" not in err and len([x for x in err.splitlines() if "error:" in x]) <= 1
        return done.value.code or 0, err

    for out, message in [
        (runs, "OUT_DIR .*runs holds the merge's input models.0.adapter"),
        (runs / "a", "holds the merge's input models.0.adapter"),
        (tmp_path / "notes.txt", "is a file"),
        (tmp_path / "mine", "is not the output of a smora merge .*merge_config.yaml"),
    ]:
        code, err = smora(config, out, "--overwrite")
        assert code == 2 and re.search(message, err), err
    assert {name: tree(tmp_path / name) for name in ("runs", "mine")} == before
    assert (tmp_path / "notes.txt").read_text() == "mine"

    assert smora(config, tmp_path / "merged")[0] == 0
    first = tree(tmp_path / "merged")
    code, err = smora(config, tmp_path / "merged")
    assert code == 2 and "pass --overwrite to replace an earlier merge output" in err
    assert smora(config, tmp_path / "merged", "--overwrite")[0] == 0  # an earlier merge: replaced
    assert tree(tmp_path / "merged") == first
    assert not list(tmp_path.glob(".merged*")), "no lock or temporary left"


def test_merge_config_problems_are_named_where_the_file_sets_them(tmp_path, monkeypatch, capsys):
    import sys

    from smora_cli.cli import main

    saved(tmp_path, "a", AdapterConfig(method="lora", r=4))
    models = [{"adapter": str(tmp_path / "a")}, {"adapter": str(tmp_path / "a")}]
    with pytest.raises(RecipeError) as info:
        merge_config_from_dict(
            {"merge_method": "ties", "models": models, "parameters": {"density": 1.5}}
        )
    assert info.value.problems == ["parameters.density: must be in (0, 1], got 1.5"]
    models[1]["parameters"] = {"density": 0}
    with pytest.raises(RecipeError) as info:
        merge_config_from_dict({"merge_method": "ties", "models": models})
    assert info.value.problems == ["models.1.parameters.density: must be in (0, 1], got 0.0"]

    config = tmp_path / "merge.yaml"
    config.write_text("merge_method: linear\n")
    monkeypatch.setattr(sys, "argv", ["smora", "merge", str(config)])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"OUT_DIR is missing: smora merge {config} OUT_DIR" in err
