"""`smora eval` end to end: GLUE TSV folders, rank classification checked against the logits."""

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import AutoModelForCausalLM, AutoTokenizer

from smora_cli.cli import main
from smora_cli.data.glue import GLUE_TASKS
from smora_cli.data.sources import load_task_split
from smora_cli.data.tasks import TaskSpec, resolve_task
from smora_cli.errors import DataError, UserInputError
from smora_cli.evaluation import runner
from smora_cli.evaluation.job import EvalRequest, run_eval
from smora_cli.evaluation.metrics import glue_average
from smora_cli.evaluation.scoring import Scorer
from smora_cli.recipe import recipe_from_dict
from smora_cli.train import run
from tests.fixtures import classifier_recipe, glue_folder

GLUE_CASES = ["sst2", "cola", "mrpc", "mnli_matched", "mnli_mismatched"]


def independent_predictions(model_dir, name, data_dir):
    scores, gold = independent_scores(model_dir, name, data_dir)
    return scores.argmax(1), gold


def independent_scores(model_dir, name, data_dir):
    """Log-likelihood of each label, one (example, label) sequence at a time, from the logits."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    task = resolve_task(TaskSpec(name=name, source=f"glue:{name}", data_dir=str(data_dir)))
    data = load_task_split(task, "validation", task_id=0, text_to_text=True)
    all_scores, gold = [], []
    for i in range(len(data)):
        item = data[i]
        prompt = tokenizer(item["text"])["input_ids"]
        scores = []
        for label in task.label_names:
            target = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
            target = target + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt + target])
            with torch.no_grad():
                log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            positions = range(len(prompt) - 1, len(prompt) + len(target) - 1)
            scores.append(
                sum(log_probs[p, t].item() for p, t in zip(positions, target, strict=True))
            )
        all_scores.append(scores)
        gold.append(item["label"])
    return np.array(all_scores), np.array(gold)


def test_glue_folder_eval_matches_independent_scoring(tmp_path, decoder_dir):
    data_dir = glue_folder(tmp_path / "glue")
    out = tmp_path / "results.json"
    report, _ = run_eval(
        EvalRequest(
            model=str(decoder_dir),
            kind="causal-lm",
            tasks=[*GLUE_CASES, "stsb"],
            data_dir=data_dir,
            batch_size=5,
            output_path=out,
            log_samples=True,
        ),
        echo=lambda *_: None,
    )
    assert json.loads(out.read_text())["results"].keys() == report["results"].keys()
    for name in GLUE_CASES:
        predicted, gold = independent_predictions(decoder_dir, name, data_dir)
        metrics = report["results"][name]
        assert report["n-samples"][name] == {"original": 12, "effective": 12} and len(gold) == 12
        assert metrics["accuracy" if name != "cola" else "matthews_correlation"] == pytest.approx(
            (predicted == gold).mean() if name != "cola" else matthews_corrcoef(gold, predicted),
            abs=1e-9,
        )
        if name == "mrpc":
            assert metrics["f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-9)
        samples = [
            json.loads(line)
            for line in (tmp_path / f"results_samples_{name}.jsonl").read_text().splitlines()
        ]
        assert [s["prediction"] for s in samples] == predicted.tolist()
    assert report["n-samples"]["stsb"]["effective"] == 12
    glue = {k: report["results"][k] for k in [*GLUE_CASES, "stsb"]}
    assert report["glue"]["score"] == pytest.approx(glue_average(glue))
    assert report["glue"]["missing"] == ["qnli", "qqp", "rte", "wnli"]
    assert report["versions"]["torch"] == torch.__version__
    assert report["config"]["batch_size"] == 5 and report["config"]["limit"] is None


def test_stsb_regression_parses_generated_numbers():
    from smora_cli.evaluation.scoring import _parse_number

    assert _parse_number("3.8") == 3.8 and _parse_number("about -1 maybe") == -1.0
    assert _parse_number("no number") == 0.0


def test_classifier_run_dir_eval_reproduces_training_eval(
    tmp_path, encoder_dir, monkeypatch, capsys
):
    run(
        recipe_from_dict(classifier_recipe(encoder_dir, tmp_path / "data", tmp_path / "run")),
        show_progress=False,
        echo=lambda *_: None,
    )
    trained = json.loads((tmp_path / "run" / "eval_validation.json").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["smora", "eval", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert "results written to" in out
    report = json.loads((tmp_path / "run" / "eval_validation.json").read_text())
    for task, result in trained["results"].items():
        assert {k: v for k, v in report["results"][task].items() if k != "alias"} == pytest.approx(
            {k: v for k, v in result.items() if k != "alias"}
        )
    assert report["config"] == trained["config"]  # same provenance from either command
    assert report["config"]["adapter_sha256"] and report["config"]["kind"] == "classifier"
    # With no argument, the most recent run under ./runs is picked and named.
    (tmp_path / "runs").mkdir()
    (tmp_path / "run").rename(tmp_path / "runs" / "latest")
    messages = []
    _, job = run_eval(EvalRequest(), echo=messages.append)
    assert job.run_dir.name == "latest" and "most recent run" in messages[0]


def test_eval_refusals(tmp_path, encoder_dir, decoder_dir):
    with pytest.raises(UserInputError, match="unknown task 'nope'"):
        run_eval(EvalRequest(model=str(decoder_dir), tasks=["nope"]))
    with pytest.raises(UserInputError, match="--tasks or --task-file is required"):
        run_eval(EvalRequest(model=str(decoder_dir)))
    with pytest.raises(DataError, match="offline\\? pass --data-dir DIR or set \\$SMORA_GLUE_DIR"):
        run_eval(EvalRequest(model=str(decoder_dir), tasks=["rte"], kind="causal-lm"))
    data_dir = glue_folder(tmp_path / "glue")
    with pytest.raises(
        UserInputError, match=f"no 'validation' split for task\\(s\\) rte in {data_dir}$"
    ):
        run_eval(
            EvalRequest(model=str(decoder_dir), tasks=["rte"], data_dir=data_dir, kind="causal-lm")
        )
    with pytest.raises(UserInputError, match="needs the task heads"):
        run_eval(
            EvalRequest(
                model=str(encoder_dir), tasks=["sst2"], kind="classifier", data_dir=data_dir
            )
        )
    assert GLUE_TASKS["mnli_matched"].subset == "mnli"


def test_more_adapter_refuses_untrained_task(tmp_path, decoder_dir, monkeypatch):
    from smora_cli.adapters import AdapterConfig, attach, save_adapter
    from smora_cli.models import load_base_model

    model = attach(
        load_base_model(str(decoder_dir), kind="causal-lm"),
        AdapterConfig(method="more", r=4, task_names=["sst2", "mnli"]),
    )
    save_adapter(model, tmp_path / "more")
    data_dir = glue_folder(tmp_path / "glue")
    report, _ = run_eval(
        EvalRequest(
            model=str(decoder_dir),
            adapter=tmp_path / "more",
            tasks=["mnli_matched", "sst2"],
            data_dir=data_dir,
            output_path=tmp_path / "r.json",
        ),
        echo=lambda *_: None,
    )
    assert set(report["results"]) == {"mnli_matched", "sst2"}
    scored = []
    monkeypatch.setattr(runner, "score_task", lambda *a, **k: scored.append(a))
    with pytest.raises(UserInputError, match="'cola' was not trained by this adapter"):
        run_eval(
            EvalRequest(
                model=str(decoder_dir),
                adapter=tmp_path / "more",
                tasks=["sst2", "cola"],
                data_dir=data_dir,
                output_path=tmp_path / "refused.json",
            ),
            echo=lambda *_: None,
        )
    assert scored == [] and not (tmp_path / "refused.json").exists()  # refused before scoring


def mnli_scorer(tmp_path, decoder_dir):
    data_dir = glue_folder(tmp_path / "glue")
    task = resolve_task(
        TaskSpec(name="mnli_matched", source="glue:mnli_matched", data_dir=str(data_dir))
    )
    data = load_task_split(task, "validation", task_id=0, text_to_text=True)
    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
    model = AutoModelForCausalLM.from_pretrained(decoder_dir).eval()
    scorer = Scorer(model, "causal-lm", tokenizer, max_length=256, target_max_length=32)
    return scorer, data, data_dir


def test_rank_classification_runs_each_prompt_once(tmp_path, decoder_dir):
    """Prompts once (N rows), then every label packed on their cache (N rows): two forwards."""
    scorer, data, data_dir = mnli_scorer(tmp_path, decoder_dir)
    items = [data[i] for i in range(len(data))]
    labels = data.task.label_names
    assert len({len(scorer.collate.target_ids(label)) for label in labels}) > 1  # padded labels
    rows = []
    scorer.model.register_forward_hook(
        lambda _m, _a, kwargs, _o: rows.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    with torch.no_grad():
        scores = scorer._shared_prompt_scores(items, labels, task_id=0)
    # Pass 2 packs every label after its prompt in one row; a label's last token is only
    # predicted, never read.
    packed = sum(len(scorer.collate.target_ids(label)) - 1 for label in labels)
    assert [shape[0] for shape in rows] == [12, 12] and rows[1][1] == packed
    expected, _ = independent_scores(decoder_dir, "mnli_matched", data_dir)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert scorer.predict(data, items) == expected.argmax(1).tolist()


def test_shared_prompt_scores_equal_one_sequence_per_label_with_adapters(tmp_path, decoder_dir):
    from smora_cli.adapters import AdapterConfig, attach
    from tests.tiny_models import randomize_adapter

    scorer, data, _ = mnli_scorer(tmp_path, decoder_dir)
    attach(scorer.model, AdapterConfig(method="smora", r=8, k=2))
    randomize_adapter(scorer.model, std=0.2)
    items = [data[i] for i in range(len(data))]
    with torch.no_grad():
        shared = scorer._shared_prompt_scores(items, data.task.label_names, task_id=0)
        expanded = scorer._expanded_scores(items, data.task.label_names)
    torch.testing.assert_close(shared, expanded, rtol=1e-4, atol=1e-4)


def test_rank_classification_refuses_labels_it_would_truncate(tmp_path, decoder_dir):
    scorer, data, _ = mnli_scorer(tmp_path, decoder_dir)
    longest = max(len(scorer.collate.target_ids(label)) - 1 for label in data.task.label_names)

    def with_room(target_max_length):
        return Scorer(
            scorer.model,
            "causal-lm",
            scorer.tokenizer,
            max_length=256,
            target_max_length=target_max_length,
        )

    with pytest.raises(DataError, match="target_max_length"):
        with_room(longest).predict(data, [data[0]])
    assert len(with_room(longest + 1).predict(data, [data[0]])) == 1


def test_task_file_scores_a_local_task_like_its_glue_twin(tmp_path, decoder_dir):
    """A task file entry reading SST-2's dev.tsv as a local file is scored exactly as
    `--tasks sst2 --data-dir` scores GLUE's SST-2 (same prompts, same predictions)."""
    data_dir = glue_folder(tmp_path / "glue")
    tsv = data_dir / "SST-2" / "dev.tsv"
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(
        "tasks:\n"
        f"  - {{name: sst2, source: {tsv}, splits: {{validation: {tsv}}}, text: sentence,\n"
        "     labels: [negative, positive]}\n"
    )
    common = {"model": str(decoder_dir), "kind": "causal-lm", "log_samples": True}
    local, _ = run_eval(
        EvalRequest(task_file=task_file, output_path=tmp_path / "local.json", **common),
        echo=lambda *_: None,
    )
    glue, _ = run_eval(
        EvalRequest(
            tasks=["sst2"], data_dir=data_dir, output_path=tmp_path / "glue.json", **common
        ),
        echo=lambda *_: None,
    )
    assert list(local["results"]) == ["sst2"] and "glue" not in local
    assert local["results"]["sst2"] == glue["results"]["sst2"]
    assert (tmp_path / "local_samples_sst2.jsonl").read_text() == (
        tmp_path / "glue_samples_sst2.jsonl"
    ).read_text()


def test_task_file_refusals(tmp_path, decoder_dir, monkeypatch, capsys):
    def smora_eval(task_file):
        monkeypatch.setattr(
            sys, "argv", ["smora", "eval", "--model", str(decoder_dir), "--task-file", task_file]
        )
        with pytest.raises(SystemExit) as done:
            main()
        return done.value.code, capsys.readouterr().err.splitlines()[0]

    empty = tmp_path / "empty.yaml"
    empty.write_text("model: {name_or_path: x}\n")
    assert smora_eval(str(empty)) == (
        2,
        f"error: {empty}: tasks: a task file is a mapping with a non-empty `tasks:` list "
        "(the recipe format: - {name: ..., source: ..., ...})",
    )
    typo = tmp_path / "typo.yaml"
    typo.write_text("tasks:\n  - {name: a, source: builtin:sentiment, lables: [x, y]}\n")
    code, line = smora_eval(str(typo))
    assert code == 2 and "tasks.0.lables: unknown key (did you mean 'labels'?)" in line
    assert smora_eval(str(tmp_path / "absent.yaml"))[0] == 2
