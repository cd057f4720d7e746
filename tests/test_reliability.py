"""Determinism, router-collapse reporting and bad data files."""

import pytest
import torch
from safetensors.torch import load_file

from smora_cli.adapters import AdapterConfig, attach, on_optimizer_step, router_stats
from smora_cli.data.sources import load_task_split
from smora_cli.data.tasks import TaskSpec, resolve_task
from smora_cli.errors import DataError
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from smora_cli.utils.log import imbalance_summary, imbalanced_layers
from tests import tiny_models as tm
from tests.fixtures import classifier_recipe


def test_same_seed_same_adapter(tmp_path, encoder_dir):
    tensors = []
    for name in ("a", "b"):
        data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / name)
        data["adapter"]["dropout"] = 0.1
        data["eval"]["at_end"] = False
        run(recipe_from_dict(data), show_progress=False, echo=lambda *_: None)
        tensors.append(load_file(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])
    data = classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "c", seed=1)
    data["eval"]["at_end"] = False
    run(recipe_from_dict(data), show_progress=False, echo=lambda *_: None)
    other = load_file(tmp_path / "c" / "adapter" / "adapter_model.safetensors")
    assert not all(torch.equal(tensors[0][k], other[k]) for k in other)


def test_router_imbalance_is_one_line_naming_the_worst_layer():
    config = AdapterConfig(method="smora", r=8, k=2, target_modules=["q_proj", "v_proj"])
    model = attach(tm.llama(layers=2), config).train()
    batch = tm.inputs()
    batch["input_ids"][:] = 5  # every token identical: the same 2 experts win everywhere
    tm.forward(model, batch)
    on_optimizer_step(model)
    stats = router_stats(model)
    experts = {"experts": config.num_expert_blocks, "active": config.active_experts}  # 8, 2
    imbalanced = imbalanced_layers(stats, **experts)
    assert set(imbalanced) == set(stats) and len(stats) == 4
    assert all(share == pytest.approx(1.0) for share in imbalanced.values())
    line = imbalance_summary(imbalanced, len(stats), step=5)
    assert "\n" not in line
    assert line.startswith("router imbalance at step 5: in 4 of 4 routed layers one expert")
    assert "(worst: model.layers.0.self_attn.q_proj, 100%)" in line
    balanced = {"layer": {"max_load": 1 / 8, "min_load": 1 / 8, "entropy": 1.0}}
    assert imbalanced_layers(balanced, **experts) == {}
    half = {"layer": {"max_load": 0.46, "min_load": 0.0, "entropy": 0.5}}  # 92 % of tokens
    assert imbalanced_layers(half, **experts) == {"layer": pytest.approx(0.92)}


def test_non_utf8_and_malformed_task_files(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"))
    task = resolve_task(TaskSpec(name="t", source=str(latin), labels=["a", "b"]))
    with pytest.raises(DataError, match=r"task 't': .*latin.csv, line 2, column 4: byte 0xe9"):
        load_task_split(task, "train", task_id=0, text_to_text=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{"text": "b", "lab\n')
    task = resolve_task(TaskSpec(name="j", source=str(broken), labels=["a", "b"]))
    with pytest.raises(DataError, match=r"task 'j': .*broken.jsonl, line 2, column 15: not valid"):
        load_task_split(task, "train", task_id=0, text_to_text=False)
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"text": 5, "label": 1}\n')
    task = resolve_task(TaskSpec(name="n", source=str(numbers), labels=["a", "b"]))
    with pytest.raises(DataError, match="text column 'text' holds int64, not text"):
        load_task_split(task, "train", task_id=0, text_to_text=False)
    regression = tmp_path / "reg.jsonl"
    regression.write_text('{"text": "a", "label": "high"}\n')
    task = resolve_task(TaskSpec(name="r", source=str(regression), metric="pearson"))
    with pytest.raises(DataError, match="regression label 'high' is not a finite number"):
        load_task_split(task, "train", task_id=0, text_to_text=False)
