"""Issue 17's inputs that gave a traceback or a wrong answer: each now one `error:` line, the
right exit code, and nothing written, deleted or left behind."""

import os
import signal

import pytest

from tests.cli_helpers import cli, nothing_left, recipe_file


@pytest.fixture
def recipe(tmp_path, encoder_dir):
    """A valid two-task recipe on the tiny encoder; the run directory is tmp_path/run."""
    return recipe_file(tmp_path, encoder_dir, max_steps=2)


def test_a_broken_list_override_and_a_bad_regex(tmp_path, recipe, monkeypatch, capsys):
    """Trial: `adapter.target_modules=[q_proj` gave a 150-line traceback after the model loaded."""
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "adapter.target_modules=[q_proj")
    assert code == 2 and error == (
        f"error: {recipe}: override adapter.target_modules: '[q_proj' is not a valid YAML list "
        "(expected ',' or ']', but got '<stream end>'); write it like [q_proj,v_proj]"
    )
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "adapter.exclude_modules=(q_proj")
    assert code == 2 and error == (
        f"error: {recipe}: adapter.exclude_modules: '(q_proj' is not a valid regular "
        "expression (missing ), unterminated subpattern at position 0); give module names as "
        "a list, e.g. [q_proj, v_proj]"
    )
    assert nothing_left(tmp_path)


def test_max_length_beyond_the_position_table(tmp_path, recipe, monkeypatch, capsys):
    """Trial: max_length=100000 with a 4,302-token text -> tensor-size traceback, exit 1, and
    a run directory that blocked the rerun."""
    long_text = " ".join(["movie"] * 4302)
    with open(tmp_path / "data" / "sent" / "train.jsonl", "a") as handle:
        handle.write(f'{{"text": "{long_text} good", "label": 1}}\n')
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "model.max_length=100000")
    assert code == 2 and error.startswith("error: model.max_length: 100000 is more than the 128")
    assert error.endswith("set model.max_length to at most 128")
    assert nothing_left(tmp_path)
    code, out, _ = cli(monkeypatch, capsys, "train", recipe, "--quiet", "model.max_length=128")
    assert code == 0 and "adapter written to" in out  # nothing blocks the rerun


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "train.jsonl is empty: it holds no examples"),
        (b"   \n\n", "train.jsonl is empty: it holds no examples"),
        (
            b'{"text": "a", "label": 0}\n{"text": "b", "lab\n{"text": "c", "label": 1}\n',
            "train.jsonl, line 2, column 15: not valid JSON (Unterminated string starting at); "
            "each line must hold one JSON object: fix or remove that line",
        ),
        (
            b'{"text": "a", "label": 0}\n["b", 1]\n',
            'train.jsonl, line 2: a JSON list where an object {"text": ..., "label": ...} is '
            "expected",
        ),
    ],
)
def test_unreadable_json_lines(tmp_path, recipe, monkeypatch, capsys, content, message):
    (tmp_path / "data" / "sent" / "train.jsonl").write_bytes(content)
    code, _, error = cli(monkeypatch, capsys, "train", recipe)
    assert code == 2 and error == f"error: task 'sent': {tmp_path}/data/sent/{message}"
    assert nothing_left(tmp_path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"text,label\n", "has a header but no rows: add the examples below it"),
        (
            "text,label\nfine,0\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"),
            ", line 3, column 4: byte 0xe9 is not UTF-8 text; save the file as UTF-8",
        ),
        (
            b"text,label\nfine,0\na, b, c,1\n",
            ", line 3: 4 fields where the header (line 1) has 2; quote fields that contain commas",
        ),
    ],
)
def test_unreadable_csv(tmp_path, recipe, monkeypatch, capsys, content, message):
    path = tmp_path / "data" / "sent.csv"
    path.write_bytes(content)
    code, _, error = cli(monkeypatch, capsys, "train", recipe, f"tasks.0.source={path}")
    joint = "" if message.startswith(",") else " "
    assert code == 2 and error == f"error: task 'sent': {path}{joint}{message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.yaml"]


def test_task_entries_the_recipe_check_used_to_accept(tmp_path, recipe, monkeypatch, capsys):
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "tasks.0.splits={validaton: test}")
    assert code == 2 and error == (
        f"error: {recipe}: tasks.0.splits.validaton: unknown split (did you mean "
        "'validation'?); the keys are train, validation, test (the values name the source's "
        "files or splits)"
    )
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "tasks.0.labels=[neg,pos,neg]")
    assert code == 2 and error == (
        f"error: {recipe}: tasks.0.labels: ['neg'] appear more than once; each class needs its "
        "own name"
    )
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "tasks={name: s, source: x}")
    assert code == 2 and error == (
        f"error: {recipe}: tasks: must be a list of tasks, got {{'name': 's', 'source': 'x'}} "
        "(dict); write each task as a list item: [{name: ..., source: ...}, ...] (or "
        "`- name: ...` lines in YAML)"
    )
    assert nothing_left(tmp_path)


def test_input_error_after_the_recipe_check_leaves_no_directory(
    tmp_path, recipe, monkeypatch, capsys
):
    """Trial: errors found while loading data left an empty output_dir behind."""
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "tasks.0.label=stars")
    assert code == 2 and "missing column(s) ['stars']" in error
    assert nothing_left(tmp_path)
    # A run being replaced comes back whole when its replacement fails the same way.
    assert cli(monkeypatch, capsys, "train", recipe, "--quiet")[0] == 0
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*"))
    code, _, error = cli(monkeypatch, capsys, "train", recipe, "--overwrite", "tasks.0.label=x")
    assert code == 2 and "missing column(s) ['x']" in error
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.yaml", "run"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_the_loop_says_so(tmp_path, recipe, monkeypatch, capsys, signum):
    """Trial: SIGINT while the model loaded exited 130 without a word."""
    import smora_cli.train as train_module

    original = train_module.load_base_model

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)  # arrives while the model loads, before the loop
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "load_base_model", signalled)
    # compared with the handler found, not Python's default: under nohup or `cmd &` SIGINT
    # starts ignored
    handler_before = signal.getsignal(signal.SIGINT)
    code, _, error = cli(monkeypatch, capsys, "train", recipe)
    name = signal.Signals(signum).name
    assert code == 128 + signum and error == (
        f"error: interrupted by {name}; nothing is left half-written (smora writes through "
        "temporary files); run the same command again (smora train: with --resume once the "
        "run has a checkpoint)"
    )
    assert nothing_left(tmp_path)
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
