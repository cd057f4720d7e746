"""`smora eval --task-file`: tasks in a recipe's `tasks:` list format, scored without a run.

The file is a mapping with a `tasks:` list, each entry what a recipe's task entry may hold
(`name`, `source`, `text`, `label`, `labels`, `metric`, ...). A whole recipe is a task file
too: its other sections are ignored.
"""

from __future__ import annotations

from pathlib import Path

from smora_cli.data.tasks import TaskSpec
from smora_cli.errors import RecipeError
from smora_cli.utils.schema import dataclass_from, read_yaml, unknown_keys


def load_task_file(path: Path) -> list[TaskSpec]:
    """The task entries of `path`, type-checked (problems of each task's content are found
    later by `task_problems`, with the model kind).

    Raises:
        RecipeError: missing or malformed file, no `tasks:` list, unknown keys, wrong types,
            duplicate task names; every problem at once, by key path.
    """
    from smora_cli.recipe import SECTIONS

    data = read_yaml(path, "task file")
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise RecipeError(
            "tasks: a task file is a mapping with a non-empty `tasks:` list "
            "(the recipe format: - {name: ..., source: ..., ...})",
            source=str(path),
        )
    problems = unknown_keys(data, set(SECTIONS), "")
    specs = [
        dataclass_from(TaskSpec, t, f"tasks.{i}", problems) for i, t in enumerate(data["tasks"])
    ]
    names = [spec.name for spec in specs if spec is not None]
    problems += [
        f"tasks: task name {name!r} appears more than once"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    if problems:
        raise RecipeError(problems, source=str(path))
    return specs
