"""The GLUE benchmark: task layouts on the Hub and in the GLUE distribution's TSV folders."""

from __future__ import annotations

from dataclasses import dataclass

HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Attributes:
        subset: Hub config name (`nyu-mll/glue`, e.g. "mrpc").
        folder: directory name in the GLUE distribution (e.g. "MRPC").
        text_columns: Hub column names of the input text(s).
        label_names: class names in label-id order; None for STS-B (regression).
        metrics: recipe metric names reported for the task.
        hub_splits: logical split -> Hub split.
        tsv_files: logical split -> file stem inside `folder`.
        tsv_columns: Hub column name -> TSV column (header name, or index for header-less files).
        tsv_header: whether the TSV files start with a header row.
    """

    subset: str
    folder: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    tsv_columns: dict
    hub_splits: dict
    tsv_files: dict
    tsv_header: bool = True


def _splits(validation: str = "validation", test: str = "test") -> dict[str, str]:
    return {"train": "train", "validation": validation, "test": test}


def _files(validation: str = "dev", test: str = "test") -> dict[str, str]:
    return {"train": "train", "validation": validation, "test": test}


def _mnli(which: str) -> GlueTask:
    """MNLI has two validation sets: `matched` (same genres as train) and `mismatched`."""
    return GlueTask(
        "mnli",
        "MNLI",
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
        _splits(f"validation_{which}", f"test_{which}"),
        _files(f"dev_{which}", f"test_{which}"),
    )


ENTAIL2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "cola",
        "CoLA",
        ("sentence",),
        ("unacceptable", "acceptable"),
        ("matthews",),
        {"sentence": 3, "label": 1},
        _splits(),
        _files(),
        tsv_header=False,
    ),
    "sst2": GlueTask(
        "sst2",
        "SST-2",
        ("sentence",),
        ("negative", "positive"),
        ("accuracy",),
        {"sentence": "sentence", "label": "label"},
        _splits(),
        _files(),
    ),
    "mrpc": GlueTask(
        "mrpc",
        "MRPC",
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        ("accuracy", "f1"),
        {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        _splits(),
        _files(),
    ),
    "qqp": GlueTask(
        "qqp",
        "QQP",
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        ("accuracy", "f1"),
        {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
        _splits(),
        _files(),
    ),
    "stsb": GlueTask(
        "stsb",
        "STS-B",
        ("sentence1", "sentence2"),
        None,
        ("pearson", "spearman"),
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"},
        _splits(),
        _files(),
    ),
    "mnli": _mnli("matched"),
    "mnli_matched": _mnli("matched"),
    "mnli_mismatched": _mnli("mismatched"),
    "qnli": GlueTask(
        "qnli",
        "QNLI",
        ("question", "sentence"),
        ENTAIL2,
        ("accuracy",),
        {"question": "question", "sentence": "sentence", "label": "label"},
        _splits(),
        _files(),
    ),
    "rte": GlueTask(
        "rte",
        "RTE",
        ("sentence1", "sentence2"),
        ENTAIL2,
        ("accuracy",),
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
        _splits(),
        _files(),
    ),
    "wnli": GlueTask(
        "wnli",
        "WNLI",
        ("sentence1", "sentence2"),
        ("not_entailment", "entailment"),
        ("accuracy",),
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
        _splits(),
        _files(),
    ),
}

# What `--tasks glue` means: the eight GLUE tasks of the T5/MoRE papers plus WNLI, with MNLI
# scored on both validation sets.
GLUE_SUITE = (
    "cola",
    "sst2",
    "mrpc",
    "qqp",
    "stsb",
    "mnli_matched",
    "mnli_mismatched",
    "qnli",
    "rte",
    "wnli",
)
