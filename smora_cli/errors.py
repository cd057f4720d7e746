"""Error types the CLI maps to one-line messages and exit codes.

User-fixable input (a recipe, a data file, an adapter directory, a flag) raises a subclass of
`UserInputError` and exits 2; a failure while a job runs raises `JobError` and exits 1.
"""

from __future__ import annotations


class SmoraError(Exception):
    """Base class of every error smora raises on purpose."""

    exit_code = 1


class UserInputError(SmoraError, ValueError):
    """Something the user gave us is wrong; the message says what and how to fix it."""

    exit_code = 2


class RecipeError(UserInputError):
    """A recipe (YAML or override) is invalid. Holds every problem found, one per line."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = where + self.problems[0]
        else:
            message = where + f"{len(self.problems)} problems:\n  - " + "\n  - ".join(self.problems)
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
