"""Shared test set-up: never touch the network, keep torch deterministic and small."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Metric scripts are copied into HF_HOME/modules on load: keep that out of the user's home.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="smora-tests-hf-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    from tests.fixtures import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory):
    from tests.fixtures import tiny_decoder

    return tiny_decoder(tmp_path_factory.mktemp("decoder"))


@pytest.fixture(scope="session")
def seq2seq_dir(tmp_path_factory):
    from tests.fixtures import tiny_seq2seq

    return tiny_seq2seq(tmp_path_factory.mktemp("seq2seq"))


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Datasets caches and smora's offline suite live in one per-session folder."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "hf-datasets"))
    monkeypatch.setenv("SMORA_CACHE", str(root / "smora-cache"))


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory):
    """The packaged SmolLM2-135M-Instruct, converted once per test session (~20 s)."""
    from smora_cli.model_sources import PACKAGED_MODELS, resolve_model_path

    packaged = PACKAGED_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]
    if packaged.locate() is None:
        pytest.skip(f"SmolLM2 is not installed: {packaged.install_hint}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMORA_CACHE", str(tmp_path_factory.getbasetemp() / "smora-cache"))
        return Path(resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct", echo=lambda _: None))
