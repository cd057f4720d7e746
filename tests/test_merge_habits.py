"""mergekit habits in merge configs: `model:` entries, one name for lambda, and a saved
merge_config.yaml that reruns from anywhere (resolved base model, absolute paths)."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smora_cli.adapters import AdapterConfig
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
