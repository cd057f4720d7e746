"""`smora eval` without --kind: the kind is read from heads, the adapter's task_type or the
config's architectures, and a wrong or unknown kind is never reported as another problem."""

import json

import pytest

from smora_cli.errors import UserInputError
from smora_cli.evaluation.model_kind import infer_kind, kind_of_architecture
from tests.cli_helpers import cli
from tests.fixtures import glue_folder


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("BertModel", "classifier"),
        ("BertForSequenceClassification", "classifier"),
        ("RobertaForMaskedLM", "classifier"),
        ("LlamaForCausalLM", "causal-lm"),
        ("GPT2LMHeadModel", "causal-lm"),
        ("WhisperForAudioFrameClassification", None),
    ],
)
def test_kind_of_architecture(name, kind):
    assert kind_of_architecture(name) == kind


def test_kind_from_config_adapter_and_heads(encoder_dir, decoder_dir, seq2seq_dir, tmp_path):
    assert infer_kind(str(encoder_dir), None, [])[0] == "classifier"
    assert infer_kind(str(decoder_dir), None, []) == (
        "causal-lm",
        "its config (architectures: LlamaForCausalLM)",
    )
    assert infer_kind(str(seq2seq_dir), None, [])[0] == "seq2seq"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
    assert infer_kind(str(decoder_dir), adapter, []) == (
        "classifier",
        "the adapter's task_type SEQ_CLS",
    )
    assert infer_kind(str(decoder_dir), None, [tmp_path])[0] == "classifier"


def test_unknown_architecture_asks_for_kind(encoder_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    config = json.loads((encoder_dir / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["BertMystery"]}))
    with pytest.raises(UserInputError, match=r"architectures: \['BertMystery'\].*pass --kind"):
        infer_kind(str(model), None, [])


def test_encoder_without_heads_is_refused_as_a_classifier(
    encoder_dir, tmp_path, monkeypatch, capsys
):
    """Was: guessed causal-lm, then a collator crash (BERT has no eos token), exit 1."""
    data = glue_folder(tmp_path / "glue")
    code, _, error = cli(
        monkeypatch, capsys, "eval", "--tasks", "sst2,mrpc", "--model", encoder_dir,
        "--data-dir", data,
    )  # fmt: skip
    assert code == 2
    assert "a classifier needs the task heads" in error
    assert "model kind classifier was read from its config (architectures: BertModel)" in error
    assert "end-of-sequence" not in error
