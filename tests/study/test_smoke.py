"""`scripts/study.py` end to end on the tiny decoder: one quick part, resumed, then reported."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study_script():
    spec = importlib.util.spec_from_file_location("study_script", ROOT / "scripts" / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_router_part_runs_skips_when_done_and_reports(
    study_script, decoder_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)  # the recipes are configs/..., as in the printed commands
    out = tmp_path / "study"
    common = ["--quick", "--out", str(out), "--set", f"model.name_or_path={decoder_dir}"]
    common += ["--set", "model.target_max_length=24"]  # the tiny BPE spells labels long
    assert study_script.main(["decoder-router", *common]) == 0
    run_dir = out / "decoder-router" / "balance-1e-5-seed1"
    results = json.loads((run_dir / "eval_validation.json").read_text())
    assert set(results["scores"]) == {"sentiment", "qa_topic", "word_analogy"}
    assert results["n-samples"]["sentiment"]["effective"] == 4  # --quick: eval.limit=4
    assert (run_dir / "adapter").is_dir() and not (run_dir / "checkpoints").exists()
    assert "(start): smora train configs/quickstart_lm.yaml" in capsys.readouterr().out

    assert study_script.main(["decoder-router", *common]) == 0  # done: nothing runs again
    printed = capsys.readouterr().out
    assert "smora train" not in printed and "1 of 1 runs finished" in printed

    assert study_script.main(["decoder-router", "--list-cells", *common]) == 0
    assert capsys.readouterr().out.startswith("   0  done    smora train")

    target = tmp_path / "results.md"
    assert study_script.main(["report", *common, "--to", str(target)]) == 0
    text = target.read_text()
    average = f"{results['average']:.3f}"
    assert "| balance-1e-5 | 1 | " in text and f"| {average} |" in text
    wall = json.loads((out / "decoder-router" / "wall_time.json").read_text())
    assert wall["invocations"] == 2

    # The record survives without the run directories: archived, restored, reported the same.
    record = tmp_path / "record"
    assert study_script.main(["archive", *common, "--to", str(record)]) == 0
    kept = sorted(p.relative_to(record).as_posix() for p in record.rglob("*") if p.is_file())
    run_files = ["eval_validation.json", "metrics.jsonl", "resolved_recipe.yaml"]
    assert kept == [
        *(f"decoder-router/balance-1e-5-seed1/{name}" for name in run_files),
        "decoder-router/wall_time.json",
    ]
    restored = tmp_path / "restored"
    from_record = [*common[3:], "--out", str(record), "--to", str(restored)]
    assert study_script.main(["archive", "--quick", *from_record]) == 0
    again = [*common[3:], "--quick", "--out", str(restored)]
    assert study_script.main(["report", *again, "--to", str(tmp_path / "restored.md")]) == 0
    assert (tmp_path / "restored.md").read_text() == text
    capsys.readouterr()
    assert study_script.main(["decoder-router", *again]) == 0
    assert "smora train" not in capsys.readouterr().out  # restored runs count as finished


def test_bad_input_is_one_line_and_exit_2(study_script, tmp_path, capsys):
    code = study_script.main(["decoder-router", "--out", str(tmp_path), "--cell", "12"])
    assert code == 2
    assert capsys.readouterr().err == "error: --cell 12 is out of range: the part has runs 0..8\n"
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the wall time
    code = study_script.main(["report", "--out", str(tmp_path), "--template", "/nonexistent.md"])
    assert code == 2
    assert "error: report template /nonexistent.md does not exist" in capsys.readouterr().err
    assert study_script.main(["archive", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: archive needs --to FOLDER\n"
    assert study_script.main(["archive", "--out", str(tmp_path), "--to", str(tmp_path)]) == 2
    assert "copied onto itself" in capsys.readouterr().err
