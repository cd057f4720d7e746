"""The real GLUE copy the GLUE tests read, and the skip marker when it is absent.

Point the tests at your copy with `SMORA_TEST_GLUE_DIR=/path/to/glue` (a folder holding
`datasets` save_to_disk task folders cola/, mrpc/, rte/, stsb/, sst2/, qnli/, mnli/); by default
they read `../shared/data/glue` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SMORA_TEST_GLUE_DIR"
DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
GLUE_DIR = Path(os.environ.get(ENV) or DEFAULT)

# Validation sizes of the GLUE release (the Hub's nyu-mll/glue).
VALIDATION_SIZES = {
    "cola": 1043,
    "mrpc": 408,
    "rte": 277,
    "stsb": 1500,
    "sst2": 872,
    "qnli": 5463,
    "mnli_matched": 9815,
    "mnli_mismatched": 9832,
}
TRAIN_SIZES = {"cola": 8551, "mrpc": 3668, "rte": 2490, "stsb": 5749}

requires_glue = pytest.mark.skipif(
    not (GLUE_DIR / "cola" / "dataset_dict.json").is_file(),
    reason=f"real GLUE not found at {GLUE_DIR}: set {ENV} to a folder of datasets "
    "save_to_disk GLUE task folders (cola/, mrpc/, ...)",
)


def hub_split(task: str, split: str = "validation") -> tuple[str, str]:
    """(task folder, split folder) of a GLUE task as the Hub names them."""
    if task.startswith("mnli_"):
        return "mnli", f"{split}_{task.removeprefix('mnli_')}"
    return task, split


def arrow_split(task: str, split: str = "validation"):
    """The split read straight from its Arrow file, independently of smora's loaders."""
    import datasets

    folder, name = hub_split(task, split)
    return datasets.Dataset.from_file(str(GLUE_DIR / folder / name / "data-00000-of-00001.arrow"))
