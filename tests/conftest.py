"""Shared test set-up: never touch the network, keep torch deterministic and small."""

import os
import tempfile

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
