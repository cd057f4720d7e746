"""Text-to-text training: decoder-only and encoder-decoder models, MoRE task routing."""

import json

import pytest

from smora_cli.adapters import load_adapter, rank_map
from smora_cli.models import load_base_model
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.fixtures import sentiment_rows, similarity_rows, task_folder, write_jsonl


def lm_recipe(model_dir, tmp_path, kind, adapter):
    gen = tmp_path / "data" / "echo"
    rows = [{"text": f"say {w}", "answer": w} for w in ("yes", "no", "up", "down") * 8]
    write_jsonl(gen / "train.jsonl", rows)
    write_jsonl(gen / "validation.jsonl", rows[:8])
    return {
        "model": {
            "name_or_path": str(model_dir),
            "kind": kind,
            "max_length": 48,
            "target_max_length": 6,
        },
        "adapter": adapter,
        "tasks": [
            {
                "name": "sent",
                "source": str(task_folder(tmp_path / "data", "sent", sentiment_rows)),
                "labels": ["negative", "positive"],
            },
            {
                "name": "sim",
                "source": str(task_folder(tmp_path / "data", "sim", similarity_rows)),
                "text": ["text", "text_b"],
                "metric": "pearson",
            },
            {"name": "echo", "source": str(gen), "target": "answer", "prompt": "{text}"},
        ],
        "mixing": {"strategy": "more" if adapter["method"] == "more" else "uniform"},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 4,
            "batch_size": 4,
            "lr": 1e-3,
            "save_steps": 2,
            "log_steps": 2,
        },
        "eval": {"batch_size": 8, "limit": 8},
    }


@pytest.mark.parametrize(
    "kind,adapter",
    [
        ("causal-lm", {"method": "smora", "r": 8, "k": 2}),
        ("causal-lm", {"method": "flylora", "r": 8, "k": 2}),
        ("seq2seq", {"method": "more", "r": 4}),
        ("seq2seq", {"method": "hydra", "r": 4}),
    ],
)
def test_text_to_text_runs(tmp_path, kind, adapter, decoder_dir, seq2seq_dir):
    model_dir = decoder_dir if kind == "causal-lm" else seq2seq_dir
    printed = []
    result = run(
        recipe_from_dict(lm_recipe(model_dir, tmp_path, kind, adapter)),
        show_progress=False,
        echo=lambda *parts: printed.append(" ".join(map(str, parts))),
    )
    report = json.loads((tmp_path / "run" / "eval_validation.json").read_text())
    assert report == result.eval
    assert set(report["higher_is_better"]["sent"]) == {"accuracy"}
    assert set(report["higher_is_better"]["sim"]) == {"pearson", "spearmanr"}
    assert set(report["higher_is_better"]["echo"]) == {"exact_match", "rougeL"}
    assert all(r["effective"] == 8 for r in report["n-samples"].values())
    entries = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    if adapter["method"] == "more":
        assert "contrastive" in entries[-1]["aux"]
        model = load_adapter(
            load_base_model(str(model_dir), kind=kind), tmp_path / "run" / "adapter"
        )
        ranks = rank_map(model)
        assert set(ranks) == {"sent", "sim", "echo"}
        assert all(1 <= r <= 4 for per_layer in ranks.values() for r in per_layer.values())
        means = ", ".join(f"{task} {sum(r.values()) / len(r):.1f}" for task, r in ranks.items())
        layers = len(ranks["sent"])
        line = f"more: learned rank per task (mean over {layers} layers): {means}"
        assert line in printed
        assert json.loads((tmp_path / "run" / "rank_map.json").read_text()) == ranks
    else:
        assert not any(line.startswith("more: learned rank") for line in printed)
        assert not (tmp_path / "run" / "rank_map.json").exists()
