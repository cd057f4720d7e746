"""The study's record (smora_cli/study/archive.py) on fake run directories."""

from smora_cli.study import execute
from smora_cli.study.archive import copy_record
from smora_cli.study.plan import Study, plan_part


def test_only_finished_runs_record_files_are_copied_and_they_count_as_finished(tmp_path):
    study = Study(out=tmp_path / "runs", seeds=(1,))
    finished, unfinished = plan_part(study, "glue-mixture")[:2]
    for run in (finished, unfinished):
        (run.out / "adapter").mkdir(parents=True)
        (run.out / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        (run.out / "checkpoints" / "step-100").mkdir(parents=True)
        (run.out / "metrics.jsonl").write_text('{"step": 10}\n')
        (run.out / "resolved_recipe.yaml").write_text("adapter: {r: 8}\n")
    (finished.out / "rank_map.json").write_text('{"cola": {"layer": 3}}')
    finished.result.write_text('{"scores": {"cola": 0.5}}')
    (finished.out / "eval_validation_untrained.json").write_text("{}")
    (finished.out / "notes.txt").write_text("the user's own file")

    target = tmp_path / "record"
    assert copy_record(study, ["glue-mixture"], target) == 5
    kept = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    names = ["eval_validation.json", "eval_validation_untrained.json", "metrics.jsonl"]
    names += ["rank_map.json", "resolved_recipe.yaml"]
    assert kept == [f"glue/{finished.name}/{name}" for name in names]
    assert (target / "glue" / finished.name / "rank_map.json").read_text() == (
        '{"cola": {"layer": 3}}'
    )

    restored = plan_part(Study(out=target, seeds=(1,)), "glue-mixture")
    assert [execute.decide(run) for run in restored[:2]] == [execute.DONE, execute.START]
