"""Load one split of a task into a `TaskData`: checked columns, labels mapped to ids.

Sources: the offline suite (`builtin:`), GLUE (Hub, or a folder of `save_to_disk` task folders
or GLUE-distribution TSVs), local jsonl/json/csv/tsv/parquet files, `datasets` `save_to_disk`
folders (a `DatasetDict` or one split's `Dataset`), folders of `<split>.<ext>` files, and Hub
datasets through `datasets.load_dataset`. Every failure is a `DataError` that names the task.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from smora_cli.data.filecheck import check_no_nulls, unreadable_file
from smora_cli.data.glue import GLUE_TASKS, HUB_ID
from smora_cli.data.tasks import COMPRESSION_SUFFIXES, DATA_SUFFIXES, Task
from smora_cli.errors import DataError

GLUE_DIR_ENV = "SMORA_GLUE_DIR"
OFFLINE_HINT = (
    "offline? point `source` at local files (jsonl/csv/parquet, a save_to_disk folder or a "
    "folder of <split>.<ext> files), or set HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 to use a "
    "cached copy"
)
GLUE_OFFLINE_HINT = (
    f"offline? pass --data-dir DIR or set ${GLUE_DIR_ENV} (recipes: `data_dir:`), DIR holding "
    "one datasets save_to_disk folder per task (cola/, mnli/, ...) or the GLUE distribution "
    "layout (CoLA/dev.tsv, ...)"
)


@dataclass
class TaskData:
    """One split of one task, formatted on access.

    Each item is `{"task_id", "text", "text_b", "label", "target"}`: for classifiers `text`
    (and `text_b` for pairs) with an integer class or float label; for language models
    `text` is the filled prompt and `target` the verbalised label or target text.
    """

    task: Task
    task_id: int
    split: str
    dataset: object  # datasets.Dataset with the task's columns
    label_ids: dict | None  # raw label value -> class id (classification)
    text_to_text: bool
    n_original: int | None = None  # examples in the split before a `limit` subset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)]
        task = self.task
        label = row.get(task.label_column) if task.type != "generation" else None
        if label is not None and self.label_ids is not None:
            label = self.label_ids[label]
        elif label is not None:
            label = float(label)
        item = {
            "task_id": self.task_id,
            "text": None,
            "text_b": None,
            "label": label,
            "target": None,
        }
        if self.text_to_text:
            item["text"] = task.prompt.format(**{c: row[c] for c in task.text_columns})
            if task.type == "generation":
                item["target"] = str(row[task.target_column])
            elif task.type == "classification":
                item["target"] = task.label_names[label]
            else:  # STS-B style regression as text: the score with one decimal (T5)
                item["target"] = f"{round(label * 5) / 5:.1f}"
        else:
            item["text"] = row[task.text_columns[0]]
            if len(task.text_columns) > 1:
                item["text_b"] = row[task.text_columns[1]]
        return item


def load_task_split(
    task: Task,
    split: str,
    *,
    task_id: int,
    text_to_text: bool,
    limit: int | None = None,
    shuffle_seed: int = 0,
) -> TaskData:
    """Load and check `split` of `task`.

    Args:
        task: a resolved task.
        split: logical split (`train`, `validation`, `test`), mapped through `task.splits`.
        task_id: the task's index in the recipe (travels with every example).
        text_to_text: format prompts/targets for language models instead of classifier fields.
        limit: keep at most this many examples (a seeded random subset).

    Raises:
        DataError: unreadable source, missing split or column, empty split, bad labels.
    """
    dataset = _load(task, split)
    if len(dataset) == 0:
        raise DataError(f"task {task.name!r}: split {split!r} is empty")
    _check_columns(task, dataset, split)
    check_no_nulls(task, dataset, split)
    n_original = len(dataset)
    if limit is not None and len(dataset) > limit:
        dataset = dataset.shuffle(seed=shuffle_seed).select(range(limit))
    has_labels = task.type != "generation" and task.label_column in dataset.column_names
    label_ids = None
    if has_labels and task.type == "classification":
        label_ids = _label_ids(task, dataset, split)
    elif has_labels:
        _check_regression_labels(task, dataset, split)
    _check_text(task, dataset, split)
    return TaskData(task, task_id, split, dataset, label_ids, text_to_text, n_original)


# ------------------------------------------------------------------------- loading
def _load(task: Task, split: str):
    kind = task.source_kind
    if kind == "builtin":
        from smora_cli.data.offline import materialize

        paths = materialize(task.location)
        return _read_files(task, {split: paths[split]} if split in paths else {}, split)
    if kind == "glue":
        data_dir = glue_data_dir(task)
        if data_dir:
            return _read_glue_folder(task, data_dir, split)
        return _read_hub(task, HUB_ID, GLUE_TASKS[task.location].subset, split, GLUE_OFFLINE_HINT)
    if kind == "local":
        return _read_files(task, _local_files(task, split), split)
    return _read_hub(task, task.location, task.subset, split)


def split_available(task: Task, split: str) -> bool | None:
    """Whether `split` of `task` is on disk, without reading it; None when only loading can
    tell (Hub datasets, the offline suite)."""
    if task.source_kind == "glue":
        data_dir = glue_data_dir(task)
        return None if data_dir is None else locate_glue_split(task, data_dir, split) is not None
    if task.source_kind == "local":
        return bool(_local_files(task, split))
    return None


def glue_data_dir(task: Task) -> Path | None:
    """The local GLUE folder of a `glue:` task: its `data_dir`, else `$SMORA_GLUE_DIR`."""
    data_dir = task.data_dir or os.environ.get(GLUE_DIR_ENV)
    return Path(data_dir).expanduser() if data_dir else None


def _local_files(task: Task, split: str) -> dict[str, Path]:
    source = Path(task.location).expanduser()
    wanted = task.splits.get(split, split)
    if source.is_file() or is_saved_split(source):  # one file or one split: the train split
        if split == "train" and wanted == "train":
            return {split: source}
        candidate = Path(wanted).expanduser()
        return {split: candidate} if candidate.is_file() or is_saved_split(candidate) else {}
    for name in _split_candidates(split, wanted):
        saved = _saved_split(source, name)
        if saved is not None:
            return {split: saved}
        for path in sorted(source.glob(f"{name}.*")):
            if _is_data_file(path):
                return {split: path}
    return {}


def is_saved_split(path: Path) -> bool:
    """A complete `Dataset.save_to_disk` folder: its state lists data files that all exist.

    (A copy can keep the state of a split whose Arrow files were left out.)
    """
    import json

    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(files) and all((path / name).is_file() for name in files)


def _saved_split(folder: Path, name: str) -> Path | None:
    """Split `name` of a `DatasetDict.save_to_disk` folder (or a folder of split folders)."""
    import json

    listing = folder / "dataset_dict.json"
    if listing.is_file():
        try:
            splits = json.loads(listing.read_text(encoding="utf-8")).get("splits", [])
        except (OSError, ValueError, AttributeError):
            splits = []
        if name not in splits:
            return None
    path = folder / name
    return path if is_saved_split(path) else None


def _split_candidates(split: str, wanted: str) -> list[str]:
    # GLUE-style folders call the validation split `dev`.
    return [wanted] + (["dev", "val"] if split == "validation" and wanted == "validation" else [])


def _is_data_file(path: Path) -> bool:
    suffixes = [s for s in path.suffixes if s not in COMPRESSION_SUFFIXES]
    return bool(suffixes) and suffixes[-1] in DATA_SUFFIXES


def _read_files(task: Task, files: dict[str, Path], split: str):
    if not files:
        raise DataError(
            f"task {task.name!r}: no {split!r} split in {task.location} (looked for "
            f"{task.splits.get(split, split)}.jsonl/.csv/.tsv/.parquet or a save_to_disk split "
            f"folder; map it with `splits: {{{split}: <file, folder or name>}}`)"
        )
    path = files[split]
    if path.is_dir():
        return _read_saved(task, path)
    suffix = [s for s in path.suffixes if s not in COMPRESSION_SUFFIXES][-1]
    if suffix == ".tsv":
        return _read_tsv(task, path, header=True)
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[suffix]
    import datasets

    try:
        return datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    except UnicodeDecodeError as e:
        raise DataError(f"task {task.name!r}: {path} is not UTF-8 text ({e.reason})") from e
    except Exception as e:  # datasets wraps parser errors in many types
        raise unreadable_file(task.name, path, e) from e


def _read_tsv(task: Task, path: Path, *, header: bool, columns: dict | None = None):
    """TSV without quote handling: GLUE files contain unbalanced quotes inside sentences."""
    import datasets
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            dtype=str,
            keep_default_na=False,
            header=0 if header else None,
            on_bad_lines="skip",
            encoding="utf-8",
        )
    except UnicodeDecodeError as e:
        raise DataError(f"task {task.name!r}: {path} is not UTF-8 text ({e.reason})") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as e:
        raise DataError(f"task {task.name!r}: cannot read {path}: {_first_line(e)}") from e
    if columns:
        missing = [c for c in columns.values() if c not in frame.columns]
        if missing:
            raise DataError(
                f"task {task.name!r}: {path} lacks GLUE columns {missing}; found "
                f"{list(frame.columns)}"
            )
        frame = frame[list(columns.values())].set_axis(list(columns), axis=1)
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def _read_saved(task: Task, path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, pyarrow errors
        raise DataError(f"task {task.name!r}: cannot read {path}: {_first_line(e)}") from e


def locate_glue_split(task: Task, data_dir: Path, split: str) -> Path | None:
    """Where `split` of a `glue:` task lies under `data_dir`, or None.

    Looked for in `data_dir/<Folder>` (GLUE distribution name: `CoLA`, `SST-2`), then
    `data_dir/<name>` (Hub config name: `cola`, `sst2`), or in `data_dir` itself when it is
    named so: a save_to_disk split folder named as on the Hub (`validation`,
    `validation_matched`), then the distribution's `<stem>.tsv` or `<stem>.jsonl` (`dev`,
    `dev_matched`). Another task's folder is never read in place of a missing one.
    """
    glue = GLUE_TASKS[task.location]
    stem = glue.tsv_files.get(split)
    folders = [data_dir / glue.folder, data_dir / glue.subset]
    if data_dir.name.lower() in (glue.folder.lower(), glue.subset):
        folders.append(data_dir)
    for folder in folders:
        saved = _saved_split(folder, task.splits.get(split, split))
        if saved is not None:
            return saved
        for suffix in (".tsv", ".jsonl"):
            if stem and (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _read_glue_folder(task: Task, data_dir: Path, split: str):
    glue = GLUE_TASKS[task.location]
    path = locate_glue_split(task, data_dir, split)
    if path is None:
        stem = glue.tsv_files.get(split, split)
        raise DataError(
            f"task {task.name!r}: no {split!r} split under {data_dir}: --data-dir must hold "
            f"{glue.subset}/{task.splits.get(split, split)}/ (datasets save_to_disk) or "
            f"{glue.folder}/{stem}.tsv (GLUE distribution; {data_dir / glue.folder / stem}.tsv "
            "not found)"
        )
    if path.suffix == ".tsv":
        return _read_tsv(task, path, header=glue.tsv_header, columns=glue.tsv_columns)
    return _read_files(task, {split: path}, split)


def _read_hub(task: Task, dataset_id: str, subset: str | None, split: str, hint=OFFLINE_HINT):
    import datasets

    hub_split = task.splits.get(split, split)
    try:
        return datasets.load_dataset(dataset_id, subset, split=hub_split)
    except ValueError as e:
        if "Unknown split" in str(e) or "split" in str(e).lower():
            raise DataError(
                f"task {task.name!r}: {dataset_id} has no split {hub_split!r} ({_first_line(e)})"
            ) from e
        raise DataError(f"task {task.name!r}: cannot load {dataset_id}: {_first_line(e)}") from e
    except Exception as e:  # connection errors, missing datasets, offline mode
        raise DataError(
            f"task {task.name!r}: cannot load {dataset_id!r} from the Hub "
            f"({_first_line(e)}); {hint}"
        ) from e


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


# ------------------------------------------------------------------------ checking
def _check_columns(task: Task, dataset, split: str) -> None:
    needed = list(task.text_columns)
    if task.type == "generation":
        needed.append(task.target_column)
    elif split != "test":
        needed.append(task.label_column)
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"task {task.name!r} ({split}): missing column(s) {missing}; the data has "
            f"{dataset.column_names}. Map them with `text:`/`label:`/`target:`"
        )


def _label_ids(task: Task, dataset, split: str) -> dict:
    """Map raw label values (ids, id strings or names) to class ids; refuse anything else."""
    names = task.label_names
    mapping: dict = {}
    for value in dataset.unique(task.label_column):
        if isinstance(value, bool):
            value_id = int(value)
        elif isinstance(value, int):
            value_id = value
        elif isinstance(value, float) and value.is_integer():  # 1.0 from JSON or a CSV column
            value_id = int(value)
        elif isinstance(value, str) and value.strip() in names:
            value_id = names.index(value.strip())
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value_id = int(value.strip())
        else:
            value_id = None
        if value_id is None or not 0 <= value_id < len(names):
            shown = "an empty label" if value in ("", None) else f"label {value!r}"
            raise DataError(
                f"task {task.name!r} ({split}): {shown} is outside the declared "
                f"labels {list(names)} (ids 0..{len(names) - 1})"
            )
        mapping[value] = value_id
    return mapping


def _check_regression_labels(task: Task, dataset, split: str) -> None:
    for value in dataset.unique(task.label_column):
        try:
            ok = math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(
                f"task {task.name!r} ({split}): regression label {value!r} is not a finite number"
            )


def _check_text(task: Task, dataset, split: str) -> None:
    for column in task.text_columns:
        if dataset.features[column].dtype not in ("string", "large_string"):
            raise DataError(
                f"task {task.name!r} ({split}): text column {column!r} holds "
                f"{dataset.features[column].dtype}, not text"
            )
