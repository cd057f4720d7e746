"""Type-checked construction of config dataclasses from parsed YAML.

Every problem is reported with its key path (`train.lr: expected a number, got 'fast'`);
unknown keys get a did-you-mean. Used by recipes and merge configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from smora_cli.errors import RecipeError


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; missing file, bad YAML or bad encoding raise `RecipeError`."""
    source = str(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise RecipeError(f"{what} file not found{hint}", source=source)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"malformed YAML{where}: {problem}", source=source) from e
    except UnicodeDecodeError as e:
        raise RecipeError(f"{what} is not UTF-8 text", source=source) from e


def unknown_keys(raw: dict, known: set[str], where: str) -> list[str]:
    out = []
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{where}{key}: unknown key{hint}; known: {', '.join(sorted(known))}")
    return out


def checked_fields(cls: type, raw: Any, path: str, problems: list[str]) -> dict | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a mapping, got {describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    problems += unknown_keys(raw, names, f"{path}.")
    values = {}
    for key, value in raw.items():
        if key in names:
            ok, converted, expected = _coerce(value, hints[key])
            if ok:
                values[key] = converted
            else:
                problems.append(f"{path}.{key}: expected {expected}, got {describe(value)}")
    return values


def dataclass_from(cls: type, raw: Any, path: str, problems: list[str]):
    before = len(problems)
    values = checked_fields(cls, raw, path, problems)
    if values is None or len(problems) > before:
        return None
    return cls(**values)


def _coerce(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """(ok, converted value, description of the expected type)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted, _ = _coerce(value, option)
            if ok:
                return True, converted, ""
        return (
            False,
            None,
            " or ".join(_coerce(None, a)[2] or "null" for a in args if a is not type(None))
            + (" or null" if type(None) in args else ""),
        )
    if hint is type(None):
        return value is None, None, "null"
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        return value in args, value, "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        if not isinstance(value, list):
            return False, None, f"a list of {_coerce(None, args[0])[2]}"
        converted = [_coerce(v, args[0]) for v in value]
        ok = all(c[0] for c in converted)
        return ok, [c[1] for c in converted], f"a list of {_coerce(None, args[0])[2]}"
    if origin is dict:
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return ok, value, "a mapping of names to names"
    return _coerce_scalar(value, hint)


def _coerce_scalar(value: Any, hint: Any) -> tuple[bool, Any, str]:
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is float:
        if isinstance(value, bool):
            return False, None, "a number"
        if isinstance(value, int | float):
            return True, float(value), "a number"
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return True, float(value), "a number"
            except ValueError:
                pass
        return False, None, "a number"
    if hint is str:
        return isinstance(value, str), value, "a string"
    return True, value, str(hint)


def describe(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"
