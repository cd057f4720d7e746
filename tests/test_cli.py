"""The `smora` command line: exit codes, one-line errors, no tracebacks, no half-written files."""

import subprocess
import sys

import pytest
import yaml

from smora_cli import __version__
from smora_cli.cli import main
from tests.fixtures import classifier_recipe


def smora(monkeypatch, capsys, *args):
    """Run `smora ARGS` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["smora", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def write_recipe(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_version_and_help(monkeypatch, capsys):
    assert smora(monkeypatch, capsys, "--version")[:2] == (0, f"smora {__version__}\n")
    code, out, _ = smora(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "--resume" in out and "Examples" in out


def test_help_is_fast_and_imports_no_torch():
    probe = "import sys; from smora_cli import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "content,message",
    [
        ("model: [unclosed\n", "malformed YAML at line"),
        ("- just\n- a list\n", "a recipe must be a mapping"),
        (
            "model: {name_or_path: m}\nadapter: {method: smora, r: 8, k: 99}\n"
            "tasks: [{name: t, source: builtin:sentiment}]\n",
            "adapter.k: (activated rank) must be at most r",
        ),
        (
            "model: {name_or_path: m}\nadapter: {method: wizard}\ntasks: [{name: t, source: builtin:sentiment}]\n",
            "adapter.method: must be one of",
        ),
    ],
)
def test_bad_recipes_exit_2_with_one_message(monkeypatch, capsys, tmp_path, content, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(content)
    code, out, err = smora(monkeypatch, capsys, "train", recipe)
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()


def test_missing_recipe_file(monkeypatch, capsys, tmp_path):
    code, _, err = smora(monkeypatch, capsys, "train", tmp_path / "nope.yaml")
    assert code == 2 and "recipe file not found" in err


def test_overrides_without_recipe_and_dry_run(monkeypatch, capsys):
    code, out, _ = smora(monkeypatch, capsys, "train", "train.max_steps=7", "--dry-run")
    assert code == 0 and yaml.safe_load(out)["train"]["max_steps"] == 7
    code, _, err = smora(monkeypatch, capsys, "train", "train.max_stepz=7")
    assert code == 2 and "did you mean 'max_steps'" in err


def test_missing_model_and_taken_output_dir(monkeypatch, capsys, tmp_path, encoder_dir):
    data = classifier_recipe(tmp_path / "no-such-model", tmp_path / "data", tmp_path / "run")
    code, _, err = smora(monkeypatch, capsys, "train", write_recipe(tmp_path / "a.yaml", data))
    assert code == 2 and "model.name_or_path:" in err and "does not exist" in err

    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run", max_steps=2)
    data["eval"]["at_end"] = False
    recipe = write_recipe(tmp_path / "b.yaml", data)
    assert smora(monkeypatch, capsys, "train", recipe, "--quiet")[0] == 0
    code, _, err = smora(monkeypatch, capsys, "train", recipe, "--quiet")
    assert code == 2 and "already holds a run" in err
    code, out, _ = smora(monkeypatch, capsys, "train", recipe, "--quiet", "--overwrite")
    assert code == 0 and "adapter written to" in out


def test_training_failure_exits_1(monkeypatch, capsys, tmp_path, encoder_dir):
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run")
    data["tasks"][1]["source"] = str(tmp_path / "huge")
    data["eval"]["at_end"] = False  # no validation split: training alone is under test
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "train.jsonl").write_text(
        '{"text": "a", "text_b": "b", "label": 3e38}\n' * 8
    )
    code, _, err = smora(
        monkeypatch, capsys, "train", write_recipe(tmp_path / "r.yaml", data), "--quiet"
    )
    assert code == 1 and "non-finite training at step" in err and "Traceback" not in err
