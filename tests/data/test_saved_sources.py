"""`datasets` save_to_disk folders as task sources (written here, no real data needed)."""

import datasets
import pytest

from smora_cli.data.sources import is_saved_split, load_task_split, split_available
from smora_cli.data.tasks import TaskSpec, resolve_task
from smora_cli.errors import DataError

ROWS = {
    "train": {"sentence": ["a good film", "a bad film", "good", "bad"], "label": [1, 0, 1, 0]},
    "dev": {"sentence": ["fine film", "awful"], "label": [1, 0]},
}


def saved_dict(root):
    dataset = datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(c) for name, c in ROWS.items()}
    )
    dataset.save_to_disk(str(root))
    return root


def task(source, **fields):
    spec = TaskSpec(name="t", source=str(source), text="sentence", labels=["neg", "pos"], **fields)
    return resolve_task(spec)


def load(task_, split):
    data = load_task_split(task_, split, task_id=0, text_to_text=False)
    return [data[i]["text"] for i in range(len(data))], [data[i]["label"] for i in range(len(data))]


def test_dataset_dict_folder_maps_splits_as_files_do(tmp_path):
    root = saved_dict(tmp_path / "dict")
    assert load(task(root), "train") == (ROWS["train"]["sentence"], ROWS["train"]["label"])
    # `dev` counts as validation, as for <split>.<ext> files.
    assert load(task(root), "validation") == (ROWS["dev"]["sentence"], ROWS["dev"]["label"])
    assert load(task(root, splits={"test": "dev"}), "test")[1] == [1, 0]
    assert split_available(task(root), "validation") is True
    assert split_available(task(root), "test") is False
    with pytest.raises(DataError, match="no 'test' split in .*save_to_disk split folder"):
        load(task(root), "test")


def test_one_split_folder_is_the_train_split_and_splits_map_to_folders(tmp_path):
    root = saved_dict(tmp_path / "dict")
    one = task(root / "train", splits={"validation": str(root / "dev")})
    assert is_saved_split(root / "train") and not is_saved_split(root)
    assert load(one, "train")[1] == ROWS["train"]["label"]
    assert load(one, "validation")[0] == ROWS["dev"]["sentence"]
    assert split_available(task(root / "train"), "validation") is False


def test_a_split_folder_without_its_arrow_files_is_not_a_split(tmp_path):
    """A copy can keep a split's state.json while its data files were left out."""
    root = saved_dict(tmp_path / "dict")
    for arrow in (root / "dev").glob("*.arrow"):
        arrow.unlink()
    assert not is_saved_split(root / "dev")
    assert split_available(task(root), "validation") is False


def test_labels_are_checked_as_for_files(tmp_path):
    bad = datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [0, 7]})
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match="label 7 is outside the declared labels"):
        load(task(tmp_path / "bad"), "train")
