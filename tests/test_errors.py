"""The error map (smora_cli/errors.py): every entry of `REPORTS` walked through `smora train`,
each ending the command with its exit code and one `error:` line (an unexpected failure adds
the SMORA_DEBUG hint); real parse errors go the same way."""

import signal
import sys

import pytest

from smora_cli.cli import main
from smora_cli.errors import (
    REPORTS,
    AdapterError,
    JobError,
    RecipeError,
    SmoraError,
    Stopped,
    UserInputError,
    click_errors,
)
from smora_cli.utils.signals import Interrupted

HINT = "(set SMORA_DEBUG=1 for the full traceback)"

# One error per entry of the table: (error, exit code, what its one line says).
SAMPLES = {
    Interrupted: (Interrupted(signal.SIGTERM), 128 + signal.SIGTERM, "interrupted by SIGTERM;"),
    click_errors.UsageError: (click_errors.UsageError("two\nlines"), 2, "error: two; lines"),
    click_errors.ClickException: (
        click_errors.FileError("f.txt", "gone"),
        1,
        "error: Could not open file",
    ),
    UserInputError: (UserInputError("first\n  second"), 2, "error: first; second"),
    Stopped: (Stopped("cell 3 stopped at step 2", 130), 130, "error: cell 3 stopped at step 2"),
    SmoraError: (JobError("loss is nan\nat step 4"), 1, "error: loss is nan; at step 4"),
    OSError: (OSError(28, "No space left on device", "/runs/x"), 1, "(/runs/x)"),
    Exception: (RuntimeError("boom"), 1, "error: RuntimeError: boom"),
}


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["smora", *args])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out, err.splitlines()


def test_every_entry_has_a_sample():
    assert set(SAMPLES) == set(REPORTS)


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda kind: kind.__name__)
def test_each_entry_exit_code_and_one_line(monkeypatch, capsys, kind):
    error, code, text = SAMPLES[kind]

    def fail(*_, **__):
        raise error

    monkeypatch.setattr("smora_cli.recipe.load_recipe", fail)
    exit_code, _, lines = run(monkeypatch, capsys, "train")
    assert exit_code == code
    assert lines[0].startswith("error: ") and text in lines[0]
    assert lines[1:] == ([HINT] if REPORTS[kind].unexpected else [])


def test_subclasses_are_reported_as_their_parent(monkeypatch, capsys):
    def fail(*_, **__):
        raise RecipeError(["a: wrong", "b: missing"], source="r.yaml")

    monkeypatch.setattr("smora_cli.recipe.load_recipe", fail)
    code, _, lines = run(monkeypatch, capsys, "train")
    assert (code, lines) == (2, ["error: r.yaml: 2 problems: a: wrong; b: missing"])
    assert issubclass(AdapterError, UserInputError)  # exit 2 through UserInputError's entry


@pytest.mark.parametrize(
    "args,text",
    [
        (["train", "--no-such-flag"], "No such option: --no-such-flag (see smora train --help)"),
        (["eval", "--kind", "wizard"], "'wizard' is not one of 'classifier', 'causal-lm'"),
        (["eval", "/no/such/run"], "'/no/such/run' does not exist"),
        (["merge", "a", "b", "c"], "give [CONFIG.yaml] OUT_DIR"),
        (["sweep-granularity", "--seeds", "1,x"], "expected comma-separated integers, got '1,x'"),
    ],
)
def test_command_lines_that_do_not_parse(monkeypatch, capsys, args, text):
    code, out, lines = run(monkeypatch, capsys, *args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and text in lines[0]


def test_smora_debug_shows_the_traceback(monkeypatch, capsys):
    def fail(*_, **__):
        raise JobError("disk full")

    monkeypatch.setattr("smora_cli.recipe.load_recipe", fail)
    monkeypatch.setenv("SMORA_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["smora", "train"])
    with pytest.raises(JobError, match="disk full"):
        main()


def test_no_command_prints_the_help(monkeypatch, capsys):
    code, out, lines = run(monkeypatch, capsys)
    assert code == 2 and lines == []  # as before: the help, and the exit code of click
    assert all(name in out for name in ("train", "eval", "merge", "sweep-granularity"))
