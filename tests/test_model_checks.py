"""Models that cannot be fetched or padded: refused in one line, in seconds."""

import time

import pytest
from huggingface_hub import constants

from smora_cli.errors import UserInputError
from smora_cli.preflight import check_special_tokens, position_limit
from smora_cli.utils import hub
from tests import tiny_models as tm


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode against a Hub that refuses connections, with an empty cache."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    hub.hub_unreachable.cache_clear()
    yield tmp_path / "hub"
    hub.hub_unreachable.cache_clear()


def test_an_uncached_hub_model_fails_fast_in_one_line(online):
    """Trial: five retries, 22 warning lines and 55 s before the message."""
    from smora_cli.models import load_tokenizer

    started = time.monotonic()
    with pytest.raises(UserInputError) as info:
        load_tokenizer("acme/tiny-bert", kind="classifier")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot reach http://127.0.0.1:9 (Connection refused) to download ")
    assert (
        f"'acme/tiny-bert', and it is neither a local folder nor in the Hugging Face cache "
        f"({online})" in message
    )
    assert constants.HF_HUB_OFFLINE is False


def test_a_cached_hub_model_is_read_offline_when_the_hub_is_unreachable(online, monkeypatch):
    snapshot = online / "models--acme--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (online / "models--acme--cached" / "refs").mkdir()
    (online / "models--acme--cached" / "refs" / "main").write_text("a" * 40)
    assert hub.checked_hub_id("acme/cached") == "acme/cached"
    assert constants.HF_HUB_OFFLINE is True  # from_pretrained now reads the cache at once


def test_the_probe_goes_through_a_configured_proxy(online, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert hub.hub_unreachable() == "Connection refused"  # the proxy's answer, not DNS's


def test_offline_mode_is_left_to_the_libraries(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: pytest.fail("no probe when offline"))
    assert hub.checked_hub_id("acme/anything") == "acme/anything"


def bare_tokenizer(**special):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def test_a_tokenizer_without_a_pad_token():
    tokenizer = bare_tokenizer(unk_token="[UNK]")
    check_special_tokens(tokenizer, "my-model", "classifier")
    assert tokenizer.pad_token == "[UNK]"  # masked out of attention and loss anyway
    padded = tokenizer(["a", "a b a"], padding=True)
    assert padded["input_ids"][0] == [0, 2, 2] and padded["attention_mask"][0] == [1, 0, 0]
    with pytest.raises(UserInputError, match="the tokenizer of my-model has no padding token"):
        check_special_tokens(bare_tokenizer(), "my-model", "classifier")
    with pytest.raises(UserInputError, match="my-model has no end-of-sequence token, which ends"):
        check_special_tokens(bare_tokenizer(unk_token="[UNK]"), "my-model", "causal-lm")


def test_position_limits_of_learned_and_rotary_positions():
    assert position_limit(tm.bert()) == 64  # learned table of 64 rows
    assert position_limit(tm.gpt2()) == 64
    assert position_limit(tm.llama()) is None  # rotary: no table to run off
    assert position_limit(tm.t5()) is None  # relative buckets
