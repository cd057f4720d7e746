"""GLUE read from real save_to_disk folders: sizes, texts and labels as in the Arrow files."""

import pytest

from smora_cli.data.glue import GLUE_TASKS
from smora_cli.data.sources import load_task_split, locate_glue_split, split_available
from smora_cli.data.tasks import TaskSpec, resolve_task
from tests.real_glue import GLUE_DIR, TRAIN_SIZES, VALIDATION_SIZES, arrow_split, requires_glue

pytestmark = requires_glue


def glue_task(name, data_dir=GLUE_DIR):
    return resolve_task(TaskSpec(name=name, source=f"glue:{name}", data_dir=str(data_dir)))


@pytest.mark.parametrize("name", VALIDATION_SIZES)
def test_validation_splits_load_with_the_arrow_files_texts_and_labels(name):
    data = load_task_split(glue_task(name), "validation", task_id=0, text_to_text=False)
    raw = arrow_split(name)
    assert len(data) == len(raw) == VALIDATION_SIZES[name]
    columns = GLUE_TASKS[name].text_columns
    labels = [data[i]["label"] for i in range(len(data))]
    if name == "stsb":
        assert labels == pytest.approx(raw["label"]) and 0 <= min(labels) < max(labels) <= 5
    else:
        assert labels == raw["label"]  # class ids, in the Hub's label order
        assert set(labels) == set(range(len(GLUE_TASKS[name].label_names)))
    for i in (0, len(data) // 2, len(data) - 1):
        item = data[i]
        assert item["text"] == raw[i][columns[0]]
        assert item["text_b"] == (raw[i][columns[1]] if len(columns) > 1 else None)


@pytest.mark.parametrize("name", TRAIN_SIZES)
def test_train_splits(name):
    data = load_task_split(glue_task(name), "train", task_id=0, text_to_text=False)
    assert len(data) == TRAIN_SIZES[name]


def test_present_and_missing_splits_are_told_apart_without_reading():
    for name in VALIDATION_SIZES:
        assert split_available(glue_task(name), "validation") is True
    # SST-2 keeps the state of a train split whose data was left out; QQP and WNLI are absent.
    for name, split in [("sst2", "train"), ("qqp", "validation"), ("wnli", "validation")]:
        assert split_available(glue_task(name), split) is False
        assert locate_glue_split(glue_task(name), GLUE_DIR, split) is None
    assert locate_glue_split(glue_task("mnli_mismatched"), GLUE_DIR, "validation") == (
        GLUE_DIR / "mnli" / "validation_mismatched"
    )


def test_a_task_folder_is_read_only_for_its_own_task():
    """data_dir = the cola folder serves glue:cola; it never stands in for another task."""
    assert split_available(glue_task("cola", GLUE_DIR / "cola"), "validation") is True
    assert split_available(glue_task("sst2", GLUE_DIR / "cola"), "validation") is False


def test_a_dataset_dict_folder_is_a_local_source_too():
    spec = TaskSpec(
        name="acceptability", source=str(GLUE_DIR / "cola"), text="sentence", labels=["no", "yes"]
    )
    data = load_task_split(resolve_task(spec), "validation", task_id=0, text_to_text=True)
    assert len(data) == 1043 and data[0]["target"] in ("no", "yes")
