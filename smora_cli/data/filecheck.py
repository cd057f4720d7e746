"""Why a data file cannot be read, by 1-based line, when a reader refuses it.

`datasets` reports an empty JSON Lines file as "StopIteration", a header-only CSV as
"corresponds to no data", a malformed line as "an error occurred while generating the
dataset" (its row numbers count from 0) and a latin-1 byte without any position. When a
reader fails, `unreadable_file` reads the file itself and names the file, the line and what
to do; only if the file looks sound does the reader's own message stand.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
from pathlib import Path

from smora_cli.errors import DataError

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def unreadable_file(task: str, path: Path, error: Exception) -> DataError:
    """The `DataError` for `path`, which a reader of task `task` refused with `error`."""
    problem = file_problem(path)
    if problem is not None:
        joint = ", " if problem.startswith("line") else " "
        return DataError(f"task {task!r}: {path}{joint}{problem}")
    text = str(error).strip()
    reason = text.splitlines()[0][:300] if text else type(error).__name__
    return DataError(f"task {task!r}: cannot read {path}: {reason}")


def file_problem(path: Path) -> str | None:
    """What is wrong with a JSON Lines, JSON, CSV or TSV file (starting "line N: ..."
    where a line is to blame), or None when nothing is found."""
    opener = _OPENERS.get(path.suffix, open)
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if not data.strip():
        return "is empty: it holds no examples"
    lines = data.splitlines()
    problem = _encoding_problem(lines)
    if problem is not None:
        return problem
    text = data.decode("utf-8-sig")
    suffix = next((s for s in reversed(path.suffixes) if s not in _OPENERS), "")
    if suffix in _DELIMITERS:
        return _table_problem(text, _DELIMITERS[suffix])
    if suffix == ".json" and text.lstrip().startswith("["):
        return _document_problem(text)
    if suffix in (".json", ".jsonl"):
        return _json_lines_problem(text)
    return None


def _encoding_problem(lines: list[bytes]) -> str | None:
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return (
                f"line {number}, column {e.start + 1}: byte 0x{line[e.start]:02x} is not "
                "UTF-8 text; save the file as UTF-8"
            )
    return None


def _json_lines_problem(text: str) -> str | None:
    """One JSON object per line (a single pretty-printed object is fine too)."""
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            return (
                f"line {number}, column {e.colno}: not valid JSON ({e.msg}); each line "
                "must hold one JSON object: fix or remove that line"
            )
        if not isinstance(value, dict):
            return (
                f"line {number}: a JSON {type(value).__name__} where an object "
                '{"text": ..., "label": ...} is expected'
            )
    return None


def _document_problem(text: str) -> str | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})"
    if not value:
        return "is empty: its JSON list holds no examples"
    return None


def _table_problem(text: str, delimiter: str) -> str | None:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return "is empty: it holds no examples"
    rows = 0
    try:
        for row in reader:
            if not row:
                continue
            rows += 1
            if len(row) != len(header):
                quote = "" if delimiter == "\t" else "; quote fields that contain commas"
                return (
                    f"line {reader.line_num}: {len(row)} fields where the header "
                    f"(line 1) has {len(header)}{quote}"
                )
    except csv.Error as e:
        return f"line {reader.line_num}: {e}"
    if rows == 0:
        return "has a header but no rows: add the examples below it"
    return None


def check_no_nulls(task, dataset, split: str) -> None:
    """Refuse null text (or target) values, which pass the column checks and would stop
    training with a tokenizer error when their row is first drawn.

    Raises:
        DataError: naming the column, the number of rows and the first (1-based) row.
    """
    import pyarrow.compute as pc

    columns = list(task.text_columns)
    if task.type == "generation":
        columns.append(task.target_column)
    for column in columns:
        values = dataset.data.column(column)
        if values.null_count:
            first = pc.index(pc.is_null(values), True).as_py() + 1
            raise DataError(
                f"task {task.name!r} ({split}): column {column!r} is empty (null) in "
                f"{values.null_count} row(s), the first being row {first}; fill or drop them"
            )
