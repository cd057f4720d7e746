"""Recipe loading: YAML + overrides, every problem named by its key path, shipped recipes valid."""

from pathlib import Path

import pytest
import yaml

from smora_cli.errors import RecipeError
from smora_cli.recipe import load_recipe, recipe_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def base(tmp_path, **sections):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    recipe = {
        "model": {"name_or_path": "some/model"},
        "adapter": {"method": "smora", "r": 8, "k": 2},
        "tasks": [{"name": "t", "source": str(data), "labels": ["neg", "pos"]}],
    }
    recipe.update(sections)
    return recipe


def problems_of(tmp_path, data, overrides=()):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, list(overrides), source="r.yaml")
    return info.value.problems


def test_valid_recipe_and_overrides(tmp_path):
    recipe = recipe_from_dict(
        base(tmp_path),
        ["train.lr=1e-4", "adapter.k=4", "tasks.0.name=s", "mixing.strategy=uniform"],
    )
    assert recipe.train.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string; we accept it as a number
    assert recipe.adapter.k == 4 and recipe.tasks[0].name == "s"
    assert recipe.mixing.strategy == "uniform"
    assert recipe.tasks[0].type == "classification" and recipe.tasks[0].metric == ["accuracy"]
    assert recipe.output_dir == Path("runs/run")


def test_peft_alias_keys(tmp_path):
    data = base(tmp_path)
    data["adapter"].update(lora_alpha=32, lora_dropout=0.1)
    recipe = recipe_from_dict(data)
    assert (recipe.adapter.alpha, recipe.adapter.dropout) == (32.0, 0.1)
    data["adapter"]["alpha"] = 8
    assert any("either alpha or lora_alpha" in p for p in problems_of(tmp_path, data))


@pytest.mark.parametrize(
    "edit,expected",
    [
        (["adapter.k=16"], "adapter.k: (activated rank) must be at most r (8), got 16"),
        (["adapter.method=magic"], "adapter.method: must be one of"),
        (["adapter.expert_rank=3"], "adapter.r: (8) must be divisible by expert_rank (3)"),
        (["adapter.r=eight"], "adapter.r: expected an integer, got 'eight' (str)"),
        (["train.lr=fast"], "train.lr: expected a number, got 'fast'"),
        (["train.max_steps=0"], "train.max_steps: must be >= 1"),
        (["train.batch_sise=4"], "train.batch_sise: unknown key (did you mean 'batch_size'?)"),
        (["trian.lr=1"], "trian: unknown key (did you mean 'train'?)"),
        (["mixing.strategy=capped"], "mixing.cap: the capped strategy needs a positive cap K"),
        (["mixing.strategy=random"], "mixing.strategy: expected one of"),
        (["tasks.0.source=builtin:nope"], "tasks.0.source: unknown builtin task 'nope'"),
        (["tasks.0.source=glue:nope"], "tasks.0.source: unknown GLUE task 'nope'"),
        (["tasks.0.source=./missing.jsonl"], "tasks.0.source: ./missing.jsonl does not exist"),
        (["tasks.0.metric=bleu"], "tasks.0.metric: unknown metric 'bleu'"),
        (["tasks.0.labels=[x]"], "tasks.0.labels: a classification task declares its label names"),
        (["tasks.0.prompt=review {nope}"], "tasks.0.prompt: placeholders ['nope']"),
        (["tasks.3.name=x"], "override tasks.3.name: tasks.3 is not an index of a 1-item list"),
        (["train.lr"], "override 'train.lr' must look like key.path=value"),
        (["train.log_with=[tensorbored]"], "train.log_with: unknown tracker(s) ['tensorbored']"),
        (
            ["model.name_or_path=./no/such/model"],
            "model.name_or_path: ./no/such/model does not exist",
        ),
        (["model.kind=robot"], "model.kind: expected one of 'classifier', 'causal-lm', 'seq2seq'"),
    ],
)
def test_invalid_values_name_their_key(tmp_path, edit, expected):
    problems = problems_of(tmp_path, base(tmp_path), edit)
    assert any(expected in p for p in problems), problems


def test_all_problems_reported_at_once(tmp_path):
    problems = problems_of(
        tmp_path, base(tmp_path), ["train.lr=x", "train.batch_size=y", "eval.spilt=test"]
    )
    assert len(problems) == 3


def test_structural_errors(tmp_path):
    assert "at least one task" in problems_of(tmp_path, {"model": {"name_or_path": "m"}})[0]
    assert "must be a mapping of sections" in str(
        pytest.raises(RecipeError, recipe_from_dict, [1, 2]).value
    )
    data = base(tmp_path)
    data["tasks"].append(dict(data["tasks"][0]))
    assert any("appears more than once" in p for p in problems_of(tmp_path, data))
    data = base(tmp_path, train=[1])
    assert any("train: must be a mapping" in p for p in problems_of(tmp_path, data))
    data = base(tmp_path)
    data["model"] = {}
    assert any("model.name_or_path: required" in p for p in problems_of(tmp_path, data))


def test_more_gets_the_recipe_tasks(tmp_path):
    recipe = recipe_from_dict(base(tmp_path, adapter={"method": "more", "r": 4}))
    assert recipe.adapter.task_names == ["t"]
    data = base(tmp_path, adapter={"method": "more", "r": 4, "task_names": ["other"]})
    assert any("must list the recipe's tasks" in p for p in problems_of(tmp_path, data))


def test_yaml_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name_or_path: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_recipe(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(binary)


def test_yaml_no_is_accepted_for_mixed_precision(tmp_path):
    path = tmp_path / "r.yaml"
    data = base(tmp_path)
    path.write_text(yaml.safe_dump(data) + "train:\n  mixed_precision: no\n")
    assert load_recipe(path).train.mixed_precision == "no"


def test_resolved_recipe_round_trips(tmp_path):
    recipe = recipe_from_dict(base(tmp_path))
    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again.to_dict() == recipe.to_dict()


RECIPES = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "merge.yaml")


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_are_valid(name):
    recipe = load_recipe(CONFIGS / name)
    assert recipe.tasks


@pytest.mark.parametrize("name", ["glue.yaml", "flan_mix.yaml"])
def test_hub_recipes_resolve_to_loaders_without_downloading(name):
    from smora_cli.data.tasks import resolve_task

    tasks = [resolve_task(spec) for spec in load_recipe(CONFIGS / name).tasks]
    kinds = {task.source_kind for task in tasks}
    assert kinds <= {"glue", "hub"}
    for task in tasks:
        assert task.type in ("classification", "regression", "generation")
        if task.type == "classification":
            assert len(task.label_names) >= 2
        assert all(f"{{{c}}}" in task.prompt for c in task.text_columns)


def test_cluster_scripts_are_well_formed():
    import subprocess

    scripts = CONFIGS.parent / "scripts"
    for script in scripts.glob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    kinds = {
        yaml.safe_load(p.read_text())["distributed_type"]
        for p in (scripts / "accelerate").glob("*.yaml")
    }
    assert kinds == {"MULTI_GPU", "FSDP", "DEEPSPEED"}


def test_shipped_merge_config_is_valid():
    from smora_cli.merging.config import load_merge_config

    config = load_merge_config(CONFIGS / "merge.yaml", check_paths=False)
    assert config.merge_method == "ties" and len(config.models) == 2


@pytest.mark.parametrize(
    "first,rest,expected",
    [
        (None, None, (None, [])),
        ("r.yaml", ["train.lr=1"], (Path("r.yaml"), ["train.lr=1"])),
        ("train.lr=1", ["adapter.r=4"], (None, ["train.lr=1", "adapter.r=4"])),
    ],
)
def test_recipe_or_override_as_first_word(first, rest, expected):
    from smora_cli.recipe import recipe_arguments

    assert recipe_arguments(first, rest) == expected


def test_a_file_named_like_an_override_is_the_recipe(tmp_path, monkeypatch):
    from smora_cli.recipe import recipe_arguments

    monkeypatch.chdir(tmp_path)
    Path("a=b.yaml").write_text("{}")
    assert recipe_arguments("a=b.yaml", []) == (Path("a=b.yaml"), [])


def test_model_kinds_have_one_home(tmp_path):
    from smora_cli.kinds import KINDS, ModelKind

    assert KINDS == ("classifier", "causal-lm", "seq2seq") and ModelKind.SEQ2SEQ == "seq2seq"
    default = recipe_from_dict(base(tmp_path))  # the default kind dumps as plain YAML
    assert yaml.safe_load(default.to_yaml())["model"]["kind"] == "classifier"
    [problem] = problems_of(tmp_path, base(tmp_path, model={"name_or_path": "m", "kind": "lm"}))
    assert problem == (
        "model.kind: expected one of 'classifier', 'causal-lm', 'seq2seq', got 'lm' (str)"
    )


def test_run_settings_are_read_without_revalidating_the_recipe(tmp_path):
    from smora_cli.errors import UserInputError
    from smora_cli.recipe import RESOLVED_NAME, read_run_settings

    data = recipe_from_dict(base(tmp_path)).to_dict()
    data["model"]["name_or_path"] = str(tmp_path / "moved-away")  # recipe_from_dict refuses it
    data["eval"]["batch_size"] = 7
    run = tmp_path / "run"
    run.mkdir()
    (run / RESOLVED_NAME).write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="moved-away does not exist"):
        recipe_from_dict(data)
    settings = read_run_settings(run)
    assert settings.model.name_or_path == str(tmp_path / "moved-away")
    assert [t.name for t in settings.tasks] == ["t"] and settings.eval.batch_size == 7
    data["eval"]["batch_size"] = "many"
    (run / RESOLVED_NAME).write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="eval.batch_size: expected an integer, got 'many'"):
        read_run_settings(run)
    with pytest.raises(UserInputError, match="is not a smora run directory"):
        read_run_settings(tmp_path)
