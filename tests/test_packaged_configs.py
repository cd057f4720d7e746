"""Recipes shipped inside the package (smora_cli/configs/) are byte copies of configs/."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = sorted((ROOT / "smora_cli" / "configs").iterdir())


def test_the_quickstart_is_packaged():
    assert "quickstart.yaml" in [path.name for path in PACKAGED]


@pytest.mark.parametrize("packaged", PACKAGED, ids=lambda path: path.name)
def test_packaged_config_equals_its_source(packaged):
    source = ROOT / "configs" / packaged.name
    assert source.is_file(), f"{packaged.name} is packaged but not in configs/"
    assert packaged.read_bytes() == source.read_bytes(), (
        f"smora_cli/configs/{packaged.name} differs from configs/{packaged.name}: copy it over"
    )
