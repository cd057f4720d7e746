"""Running `smora` in-process and writing small recipes, for the reliability tests."""

import sys

import pytest
import yaml

from tests.fixtures import classifier_recipe


def cli(monkeypatch, capsys, *args):
    """`smora ARGS` in-process: (exit code, stdout, the one `error:` line or None).

    Fails the test on a traceback or on more than one error line.
    """
    from smora_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["smora", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, err
    return done.value.code or 0, out, (errors[0] if errors else None)


def recipe_file(tmp_path, encoder_dir, **train):
    """tmp_path/recipe.yaml: two tasks on the tiny encoder into tmp_path/run, no final eval."""
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run", **train)
    data["eval"]["at_end"] = False
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def nothing_left(tmp_path):
    """No run directory, lock file or temporary beside where the run would be."""
    return sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.yaml"]
