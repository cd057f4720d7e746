"""mergekit habits in merge configs: `model:` entries, one name for lambda, and a saved
merge_config.yaml that reruns from anywhere (resolved base model, absolute paths)."""

import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smora_cli.adapters import AdapterConfig
from smora_cli.cli import main
from smora_cli.errors import RecipeError
from smora_cli.merging.config import merge_config_from_dict
from tests.cli_helpers import cli
from tests.test_merge import base_dir, saved


def test_mergekit_style_config_runs_and_is_saved_as_it_ran(tmp_path, monkeypatch, capsys):
    base = base_dir(tmp_path)
    for i in (1, 2):  # the adapters record their base; the config names none
        config = AdapterConfig(method="lora", r=4, alpha=8, base_model_name_or_path=str(base))
        saved(tmp_path, f"a{i}", config, seed=i)
    (tmp_path / "merge.yaml").write_text(
        "models:\n"
        "  - model: a1\n    parameters: {weight: 0.4}\n"
        "  - model: a2\n    parameters: {weight: 0.6}\n"
        "merge_method: task_arithmetic\n"
        "parameters: {lambda: 0.5}\n"
    )
    monkeypatch.chdir(tmp_path)
    code, _, error = cli(monkeypatch, capsys, "merge", "merge.yaml", "out")
    assert (code, error) == (0, None)
    ran = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert ran["base_model"] == str(base.resolve())
    assert [m["adapter"] for m in ran["models"]] == [str(tmp_path / "a1"), str(tmp_path / "a2")]
    assert ran["parameters"]["lambda"] == 0.5 and "scale" not in ran["parameters"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, error = cli(
        monkeypatch, capsys, "merge", tmp_path / "out" / "merge_config.yaml", "again"
    )
    assert (code, error) == (0, None)
    first = load_file(tmp_path / "out" / "model.safetensors")
    second = load_file(elsewhere / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"scale": 2.0}, "parameters.scale: unknown key; known: density, lambda,"),
        ({"lambda": "big"}, "parameters.lambda: expected"),
        ({"lamda": 1.0}, "known: density, lambda, majority_sign, seed"),
    ],
)
def test_lambda_is_the_only_name(tmp_path, parameters, problem):
    saved(tmp_path, "a", AdapterConfig(method="lora", r=4))
    models = [{"adapter": str(tmp_path / "a")}] * 2
    with pytest.raises(RecipeError) as info:
        merge_config_from_dict({"merge_method": "ties", "models": models, "parameters": parameters})
    assert len(info.value.problems) == 1 and problem in info.value.problems[0]
    assert "scale" not in info.value.problems[0].split("unknown key")[-1]


def test_model_and_adapter_together_are_refused(tmp_path):
    saved(tmp_path, "a", AdapterConfig(method="lora", r=4))
    entry = {"adapter": str(tmp_path / "a"), "model": str(tmp_path / "a")}
    with pytest.raises(RecipeError, match="models.0: give adapter or model"):
        merge_config_from_dict({"merge_method": "fold", "models": [entry]})


def test_flylora_adapters_sharing_an_a_seed_are_warned_about(tmp_path, monkeypatch, capsys):
    base = base_dir(tmp_path)
    for name, seed in (("x", 0), ("y", 0), ("z", 5)):
        flylora = AdapterConfig(method="flylora", r=4, k=2, a_seed=seed, target_modules=["q_proj"])
        saved(tmp_path, name, flylora)

    def mean_of(*names, out):
        models = "".join(f"  - adapter: {tmp_path / n}\n" for n in names)
        config = tmp_path / f"{out}.yaml"
        config.write_text(
            f"base_model: {base}\nmodels:\n{models}merge_method: mean\noutput: adapter\n"
        )
        monkeypatch.setattr(sys, "argv", ["smora", "merge", str(config), str(tmp_path / out)])
        with pytest.raises(SystemExit) as done:
            main()
        return done.value.code or 0, capsys.readouterr()

    code, printed = mean_of("x", "z", "y", out="shared")
    assert code == 0 and (tmp_path / "shared" / "adapter_model.safetensors").is_file()
    assert printed.err.splitlines() == [
        "warning: models.0, models.2 share a_seed 0: their frozen A matrices are identical; "
        "train each task adapter with its own adapter.a_seed if the merge should combine "
        "distinct A"
    ]
    code, printed = mean_of("x", "z", out="distinct")
    assert (code, printed.err) == (0, "")


def test_the_merge_command_line_as_a_request(tmp_path):
    from smora_cli.errors import UserInputError
    from smora_cli.merging.config import merge_request

    saved(tmp_path, "a", AdapterConfig(method="lora", r=4))
    out = tmp_path / "out"
    fold = merge_request(None, out, adapter=tmp_path / "a", task=None, base="b", dtype="bfloat16")
    assert not fold.per_task and fold.config.merge_method == "fold"
    assert (fold.config.base_model, fold.config.dtype, fold.config.output) == (
        "b",
        "bfloat16",
        "model",
    )
    assert [(m.adapter, m.task) for m in fold.config.models] == [(str(tmp_path / "a"), None)]
    assert merge_request(None, out, adapter=tmp_path / "a", per_task=True).per_task
    (tmp_path / "merge.yaml").write_text(f"models: [{tmp_path / 'a'}, {tmp_path / 'a'}]\n")
    from_file = merge_request(tmp_path / "merge.yaml", out)
    assert from_file.config.merge_method == "linear" and len(from_file.config.models) == 2
    refusals = [
        (dict(config_file=tmp_path / "merge.yaml", adapter=tmp_path / "a"), "replaces --adapter"),
        (dict(config_file=None), "give a merge CONFIG.yaml, or --adapter DIR"),
        (dict(config_file=None, adapter=tmp_path / "a", per_task=True, task="t"), "drop --task"),
        (dict(config_file=None, adapter=tmp_path / "nope"), "nope is not a directory"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(UserInputError, match=message):
            merge_request(kwargs.pop("config_file"), out, **kwargs)
