"""The recipes `smora train` runs first: the decoder quickstart is the default."""

from pathlib import Path

from smora_cli.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_recipe_is_the_decoder_quickstart():
    default = load_recipe(None)
    assert Path(default.source).resolve() == (ROOT / "configs" / "quickstart_lm.yaml").resolve()
    assert default.model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert default.model.kind == "causal-lm"
    tasks = {task.name: task for task in default.tasks}
    assert list(tasks) == ["sentiment", "qa_topic", "word_analogy"]
    # One generation task among them, as the quickstart promises.
    assert tasks["word_analogy"].source == "builtin:word_analogy"
    assert default.eval.baseline


def test_the_encoder_quickstart_is_one_argument_away():
    encoder = load_recipe(ROOT / "configs" / "quickstart.yaml")
    assert encoder.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.model.kind == "classifier" and len(encoder.tasks) == 5
