"""Error types, and how the command line reports every error it catches.

User-fixable input (a recipe, a data file, an adapter directory, a flag) raises a subclass of
`UserInputError` and exits 2; a failure while a job runs raises `JobError` and exits 1.
`REPORTS` maps each exception type to its exit code and one-line message; `report` finds an
error's entry through its class hierarchy, so a new subclass is reported as its parent is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smora_cli.utils.signals import Interrupted

try:  # typer 0.2x parses with its own copy of click, earlier versions with click itself
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors


class SmoraError(Exception):
    """Base class of every error smora raises on purpose."""

    exit_code = 1


class UserInputError(SmoraError, ValueError):
    """Something the user gave us is wrong; the message says what and how to fix it."""

    exit_code = 2


class RecipeError(UserInputError):
    """A recipe (YAML or override) is invalid. Holds every problem found."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = where + self.problems[0]
        else:
            message = where + f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class AdapterError(UserInputError):
    """An adapter directory or adapter config cannot be used with this model."""


class AdapterConfigError(AdapterError):
    """Invalid adapter hyper-parameters; `problems` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"`{name}` {message}" for name, message in problems))


class DataError(UserInputError):
    """A task's data cannot be loaded or does not have the declared shape."""


class JobError(SmoraError):
    """A job failed while running (non-finite loss, interrupted write, ...)."""


class NonFiniteError(JobError):
    """Loss or gradients became NaN/inf; the message names the step and the module."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of another library's error (theirs may run to many), for a message
    of ours; the error's type name when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class Stopped(JobError):
    """A job stopped by a signal after writing its checkpoint; exits 128 + the signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------------ reporting
@dataclass(frozen=True)
class Report:
    """How the command line reports one type of error.

    Attributes:
        exit_code: the process exit code; None takes the error's own `exit_code` (a signal's
            128 + its number, a click error's code).
        message: the text after `error: `, before it is joined into one line.
        unexpected: a failure the user may want the traceback of: a second line says how
            (SMORA_DEBUG=1). Never for input errors, whose message says what to fix.
    """

    exit_code: int | None
    message: Callable[[BaseException], str]
    unexpected: bool = False


def _interrupted(error: BaseException) -> str:
    return (
        f"interrupted by {error}; nothing is left half-written (smora writes through temporary "
        "files); run the same command again (smora train: with --resume once the run has a "
        "checkpoint)"
    )


def _usage(error: BaseException) -> str:
    ctx = getattr(error, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return error.format_message() + hint


def _os_error(error: BaseException) -> str:  # disk full, permissions, a file for a folder
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def _unexpected(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


REPORTS: dict[type[BaseException], Report] = {
    Interrupted: Report(None, _interrupted),
    click_errors.UsageError: Report(2, _usage),  # a command line that does not parse
    click_errors.ClickException: Report(None, lambda e: e.format_message()),
    UserInputError: Report(2, str),
    Stopped: Report(None, str),
    SmoraError: Report(1, str, unexpected=True),
    OSError: Report(1, _os_error, unexpected=True),
    Exception: Report(1, _unexpected, unexpected=True),  # a bug: the traceback helps
}


def report(error: BaseException) -> Report | None:
    """The entry of the nearest class of `error` in `REPORTS`; None for other exceptions
    (SystemExit, KeyboardInterrupt), which the command line lets through."""
    return next((REPORTS[cls] for cls in type(error).__mro__ if cls in REPORTS), None)


def exit_code(error: BaseException) -> int:
    """The exit code `error` ends the command with."""
    entry = report(error)
    return entry.exit_code if entry.exit_code is not None else error.exit_code


def one_line(error: BaseException) -> str:
    """The error's message as one line: a message of several lines is joined with `; `."""
    text = report(error).message(error)
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
