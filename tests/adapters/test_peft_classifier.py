"""PEFT's default sequence-classification adapter (task_type SEQ_CLS, modules_to_save
[classifier, score]) loads as a one-task smora classifier with PEFT's logits."""

import json

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from smora_cli.adapters.io import load_adapter
from smora_cli.adapters.peft_classifier import load_peft_classifier
from smora_cli.data.sources import load_task_split
from smora_cli.data.tasks import TaskSpec, resolve_task
from smora_cli.errors import AdapterError
from smora_cli.models import load_base_model
from tests.cli_helpers import cli
from tests.fixtures import glue_folder

SENTENCES = ["the movie was long", "red river city stone and a big blue house", "one"]


def peft_classifier(model_dir, out, num_labels, target_modules=None, **model_kwargs):
    """A PEFT SEQ_CLS adapter with non-zero LoRA and a random head, saved to `out`; the PEFT
    model in eval mode."""
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=num_labels, **model_kwargs
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, init_lora_weights=False, target_modules=target_modules
    )
    model = get_peft_model(base, config)
    model.save_pretrained(out)
    return model.eval()


def smora_logits(model_dir, adapter, batch):
    model = load_peft_classifier(load_base_model(str(model_dir), kind="classifier"), adapter)
    task_ids = torch.zeros(len(batch["input_ids"]), dtype=torch.long)
    with torch.no_grad():
        return model.eval()(**batch, task_ids=task_ids)


def test_bert_classifier_adapter_gives_peft_logits(encoder_dir, tmp_path):
    peft = peft_classifier(encoder_dir, tmp_path / "peft", num_labels=3)
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["classifier", "score"]  # PEFT's default
    batch = dict(
        AutoTokenizer.from_pretrained(encoder_dir)(SENTENCES, padding=True, return_tensors="pt")
    )
    with torch.no_grad():
        expected = peft(**batch).logits
    got = smora_logits(encoder_dir, tmp_path / "peft", batch)
    assert got.shape == expected.shape == (3, 3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_decoder_score_adapter_gives_peft_logits(decoder_dir, tmp_path):
    """Decoders' `score` reads the last real token (right padding here)."""
    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
    tokenizer.padding_side = "right"
    peft = peft_classifier(
        decoder_dir, tmp_path / "peft", num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    assert batch["attention_mask"].sum(1).unique().numel() == 3  # really padded
    with torch.no_grad():
        expected = peft(**batch).logits
    torch.testing.assert_close(
        smora_logits(decoder_dir, tmp_path / "peft", batch), expected, atol=1e-5, rtol=1e-5
    )


def test_smora_eval_scores_a_peft_classifier_adapter(encoder_dir, tmp_path, monkeypatch, capsys):
    """No --kind: the adapter's task_type says classifier; accuracy is PEFT's on the same rows."""
    peft = peft_classifier(encoder_dir, tmp_path / "peft", num_labels=2)
    data = glue_folder(tmp_path / "glue")
    out = tmp_path / "eval.json"
    code, _, error = cli(
        monkeypatch, capsys, "eval", "--tasks", "sst2", "--model", encoder_dir,
        "--adapter", tmp_path / "peft", "--data-dir", data, "--output-path", out,
    )  # fmt: skip
    assert (code, error) == (0, None)
    task = resolve_task(TaskSpec(name="sst2", source="glue:sst2", data_dir=str(data)))
    rows = load_task_split(task, "validation", task_id=0, text_to_text=False)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    correct = 0
    for i in range(len(rows)):
        with torch.no_grad():
            logits = peft(**tokenizer(rows[i]["text"], return_tensors="pt")).logits
        correct += int(logits.argmax(-1).item() == rows[i]["label"])
    report = json.loads(out.read_text())
    assert report["config"]["kind"] == "classifier"
    assert report["results"]["sst2"]["accuracy"] == pytest.approx(correct / len(rows), abs=1e-9)
    assert len(rows) == 12


def test_heads_without_a_smora_equivalent_are_refused(tmp_path):
    """DistilBERT's classifier has a pre_classifier layer PEFT does not save."""
    from transformers import DistilBertConfig, DistilBertModel

    from tests.fixtures import tiny_encoder

    tokenizer_dir = tiny_encoder(tmp_path / "bert")
    config = DistilBertConfig(
        vocab_size=AutoTokenizer.from_pretrained(tokenizer_dir).vocab_size,
        dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64,
    )  # fmt: skip
    DistilBertModel(config).save_pretrained(tmp_path / "distil")
    peft_classifier(tmp_path / "distil", tmp_path / "peft", 2, target_modules=["q_lin", "v_lin"])
    encoder = load_base_model(str(tmp_path / "distil"), kind="classifier")
    with pytest.raises(AdapterError, match="pre_classifier"):
        load_peft_classifier(encoder, tmp_path / "peft")


def test_other_commands_refuse_a_classifier_adapter_by_name(encoder_dir, tmp_path):
    peft_classifier(encoder_dir, tmp_path / "peft", num_labels=2)
    encoder = load_base_model(str(encoder_dir), kind="classifier")
    with pytest.raises(AdapterError, match="sequence-classification adapter"):
        load_adapter(encoder, tmp_path / "peft")
