"""lm-evaluation-harness on the real decoder (SmolLM2-135M): the `smora` model and the stock
`hf` model with `peft=` give the log-likelihoods smora's rank classification computes."""

import json
import sys

import numpy as np
import pytest
import torch

from smora_cli.adapters import AdapterConfig, attach, routing_context, save_adapter
from smora_cli.errors import UserInputError
from smora_cli.evaluation.scoring import shared_prompt_log_likelihoods
from smora_cli.models import load_base_model, load_tokenizer
from tests.tiny_models import randomize_adapter

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval missing: pip install -e '.[lm-eval]'")

CHOICES = ["negative", "positive"]
DOCS = [
    {"text": "a gorgeous, witty, seductive movie.", "label": 1},
    {"text": "the plot is a mess and the jokes fall flat.", "label": 0},
    {"text": "one of the best films of the year.", "label": 1},
    {"text": "tedious, overlong and badly acted.", "label": 0},
    {"text": "it will leave you smiling all the way home.", "label": 1},
]
TASK_YAML = """task: smora_reviews
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: {choices}
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("harness_task")
    data = folder / "reviews.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (folder / "smora_reviews.yaml").write_text(
        TASK_YAML.format(data=data, choices=json.dumps(CHOICES))
    )
    return folder


@pytest.fixture(scope="module")
def adapters(smollm2_path, tmp_path_factory):
    """A token-routed smora, a task-routed more and a plain lora adapter on SmolLM2, each with
    non-zero weights so that it changes the scores."""
    root = tmp_path_factory.mktemp("harness_adapters")
    configs = {
        "smora": AdapterConfig(method="smora", r=8, k=2, target_modules=["q_proj", "v_proj"]),
        "more": AdapterConfig(
            method="more", r=4, target_modules=["q_proj", "v_proj"], task_names=["other", "reviews"]
        ),
        "lora": AdapterConfig(method="lora", r=4, target_modules=["q_proj", "v_proj"]),
    }
    for name, config in configs.items():
        config.base_model_name_or_path = str(smollm2_path)  # as `smora train` records it
        model = attach(load_base_model(str(smollm2_path), kind="causal-lm"), config)
        randomize_adapter(model, std=0.05)
        save_adapter(model, root / name)
    return root


def harness(model, model_args, task_dir):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import smora_cli.evaluation.harness  # noqa: F401  (registers `smora`)

    out = simple_evaluate(
        model=model,
        model_args={"device": "cpu", "dtype": "float32", **model_args},
        tasks=["smora_reviews"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=4,
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(out["samples"]["smora_reviews"], key=lambda s: s["doc_id"])
    scores = np.array([[resp[0][0] for resp in s["resps"]] for s in samples])
    return out["results"]["smora_reviews"]["acc,none"], scores


def smora_scores(smollm2_path, adapter_dir=None, task_id=0):
    """smora's rank-classification log-likelihoods of the harness's (context, continuation)
    token split: context once, every choice on its key/value cache."""
    from smora_cli.adapters.io import load_adapter

    tokenizer = load_tokenizer(str(smollm2_path), kind="causal-lm")
    model = load_base_model(str(smollm2_path), kind="causal-lm").eval()
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir)
    rows = []
    for doc in DOCS:
        context = f"Review: {doc['text']}\nSentiment:"
        context_ids = tokenizer.encode(context)
        continuations = [tokenizer.encode(context + " " + c)[len(context_ids) :] for c in CHOICES]
        with torch.no_grad(), routing_context(model, task_ids=task_id):  # as Scorer.predict
            scores = shared_prompt_log_likelihoods(
                model, [context_ids], continuations, tokenizer.pad_token_id, task_id
            )
        rows.append(scores[0].tolist())
    return np.array(rows)


def accuracy(scores):
    return float(np.mean(scores.argmax(1) == [doc["label"] for doc in DOCS]))


@pytest.mark.parametrize("method", ["smora", "more"])
def test_smora_model_scores_equal_smoras_rank_classification(
    method, smollm2_path, adapters, task_dir
):
    args = {"pretrained": str(smollm2_path), "adapter": str(adapters / method)}
    if method == "more":
        args["task"] = "reviews"  # index 1 of the adapter's tasks
    acc, got = harness("smora", args, task_dir)
    expected = smora_scores(smollm2_path, adapters / method, task_id=1 if method == "more" else 0)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert acc == accuracy(expected)
    base = smora_scores(smollm2_path)
    assert np.abs(got - base).max() > 0.05  # the adapter is in the harness's forward


def test_lora_adapter_loads_through_the_stock_hf_model_with_peft(smollm2_path, adapters, task_dir):
    acc, got = harness(
        "hf", {"pretrained": str(smollm2_path), "peft": str(adapters / "lora")}, task_dir
    )
    expected = smora_scores(smollm2_path, adapters / "lora")
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert acc == accuracy(expected)


def test_more_needs_one_of_its_tasks_and_classifiers_are_refused(adapters, tmp_path):
    from smora_cli.evaluation.harness import SmoraLM

    with pytest.raises(UserInputError, match="task=<one of other, reviews>; got None"):
        SmoraLM(adapter=str(adapters / "more"))
    with pytest.raises(UserInputError, match="routes by token"):
        SmoraLM(adapter=str(adapters / "smora"), task="reviews")
    heads = tmp_path / "classifier"
    heads.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (heads / name).write_bytes((adapters / "lora" / name).read_bytes())
    (heads / "task_heads.json").write_text("{}")
    with pytest.raises(UserInputError, match="classifier adapter"):
        SmoraLM(adapter=str(heads))


def test_harness_command_line_reaches_the_smora_model(
    smollm2_path, adapters, task_dir, tmp_path, monkeypatch
):
    """`python -m smora_cli.lm_eval` is the harness's own command line with `smora` known; the
    adapter's recorded base model is used when `pretrained` is not given. (Run in-process: the
    harness indexes its own task library first, ~8 s.)"""
    from smora_cli.lm_eval import main

    out = tmp_path / "out"
    argv = ["smora_cli.lm_eval", "--model", "smora", "--tasks", "smora_reviews"]
    argv += ["--model_args", f"adapter={adapters / 'smora'},dtype=float32"]
    argv += ["--include_path", str(task_dir), "--device", "cpu", "--batch_size", "4"]
    monkeypatch.setattr(sys, "argv", [*argv, "--output_path", str(out)])
    main()
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    expected = smora_scores(smollm2_path, adapters / "smora")
    assert results["results"]["smora_reviews"]["acc,none"] == accuracy(expected)
    assert results["config"]["model"] == "smora"
