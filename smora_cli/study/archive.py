"""A study's record: the small files its report reads, copied out of the run directories.

Run directories hold adapters and checkpoints (tens of MB each on SmolLM2); the report reads
only results, logs, recipes and MoRE's rank maps. `copy_record` copies those files of every
finished run from one study folder into another with the same layout: into a folder that can
be kept (in git, say) when a machine's runs would be lost, and back into an output folder,
where a copied run counts as finished (its result file is there) and the report reads it as
before. A copied run has no adapter: merging needs its single-task adapters on disk.
"""

from __future__ import annotations

from pathlib import Path

from smora_cli.errors import UserInputError
from smora_cli.merging.run import MERGE_RECIPE
from smora_cli.recipe import RESOLVED_NAME
from smora_cli.study.execute import WALL_TIME
from smora_cli.study.plan import Run, Study, part_dir, plan_part
from smora_cli.sweep import CELL_FILE
from smora_cli.train import RANK_MAP_FILE
from smora_cli.utils.fs import atomic_write_bytes
from smora_cli.utils.log import METRICS_NAME

RECORD_NAMES = (RESOLVED_NAME, METRICS_NAME, RANK_MAP_FILE, CELL_FILE, MERGE_RECIPE)
RECORD_PATTERN = "eval_*.json"  # a run's or a merge's scores


def record_files(run: Run) -> list[Path]:
    """The files of a finished run that the report reads (none for an unfinished run)."""
    if not run.result.is_file():
        return []
    folder = run.result.parent  # a train run's, a sweep cell's or a merge's directory
    named = [folder / name for name in RECORD_NAMES if (folder / name).is_file()]
    return named + sorted(folder.glob(RECORD_PATTERN))


def copy_record(study: Study, parts: list[str], target: Path) -> int:
    """Copy the record of `parts`' finished runs from `study.out` into `target`, with the same
    layout; returns the number of files copied. A file already in `target` is replaced."""
    source = study.out.resolve()
    if target.resolve() == source:
        raise UserInputError(f"the record would be copied onto itself ({target})")
    copied = 0
    for part in parts:
        files = [f for run in plan_part(study, part) for f in record_files(run)]
        wall = part_dir(study, part) / WALL_TIME
        for path in dict.fromkeys([*files, *([wall] if wall.is_file() else [])]):
            destination = target / path.resolve().relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(destination, path.read_bytes())
            copied += 1
    return copied
