"""The evidence study of issue 15 (docs/results.md): each part a list of `smora` commands.

    python scripts/study.py PART --list-cells      # the part's runs, numbered, as commands
    python scripts/study.py PART                   # run what is missing: finished runs are
                                                   # skipped, interrupted ones resumed
    python scripts/study.py PART --cell I          # run I only (split a part over sessions
                                                   # or a SLURM array)
    python scripts/study.py PART --quick --out /tmp/study --set model.name_or_path=...
                                                   # smoke test: 2 steps, one seed, few runs
    python scripts/study.py report [--template docs/results.template.md] [--to FILE]
    python scripts/study.py archive --to docs/study-record   # keep the finished runs' record
    python scripts/study.py archive --out docs/study-record --to runs/study   # and restore it

PARTs: glue-mixture, glue-single (real GLUE: set SMORA_GLUE_DIR), decoder-granularity,
decoder-merging, decoder-router. The recipes are configs/study/*.yaml and
configs/quickstart_lm.yaml; the plans, run-or-resume, statistics and report filling live in
smora_cli/study/. The report's prose is the template's; this file only parses and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from smora_cli.errors import UserInputError, exit_code, one_line, report
from smora_cli.study.archive import copy_record
from smora_cli.study.execute import add_wall_time, decide, run_all, select
from smora_cli.study.plan import PARTS, Study, part_dir, plan_part
from smora_cli.study.report import write_report

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=[*PARTS, "report", "archive"])
    parser.add_argument("--list-cells", action="store_true", help="Print the runs and exit.")
    parser.add_argument("--cell", type=int, help="Run only run I of --list-cells.")
    parser.add_argument("--quick", action="store_true", help="2 steps, one seed, few runs.")
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="Run directories.")
    parser.add_argument("--recipes", type=Path, default=Path("configs"), help="Recipe folder.")
    parser.add_argument("--seeds", default="1,2,3", help="Comma-separated seeds.")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="Override every run."
    )
    parser.add_argument("--template", type=Path, default=ROOT / "docs" / "results.template.md")
    parser.add_argument(
        "--to", type=Path, help="report: its file (default OUT/results.md); archive: a folder."
    )
    return parser.parse_args(argv)


def study_of(args: argparse.Namespace) -> Study:
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    if args.quick:
        seeds = seeds[:1]
    return Study(args.recipes, args.out, seeds, tuple(args.set), args.quick)


def run_part(study: Study, part: str, args: argparse.Namespace) -> None:
    runs = plan_part(study, part)
    if args.list_cells:
        for index, run in enumerate(runs):
            print(f"{index:4d}  {decide(run):7s} {run.shell()}")
        print(f"{len(runs)} runs; as a SLURM array: --array=0-{len(runs) - 1}")
        return
    chosen = select(runs, args.cell)
    started = time.perf_counter()
    try:
        run_all(chosen, lambda *parts: print(*parts, flush=True), whole=args.cell is None)
    finally:
        add_wall_time(part_dir(study, part), time.perf_counter() - started)
    done = sum(run.result.is_file() for run in runs)
    print(f"{part}: {done} of {len(runs)} runs finished")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = study_of(args)
        if args.part == "archive":
            if args.to is None:
                raise UserInputError("archive needs --to FOLDER")
            copied = copy_record(study, list(PARTS), args.to)
            print(f"{copied} record files of finished runs copied from {study.out} to {args.to}")
        elif args.part == "report":
            target = args.to or study.out / "results.md"
            print(f"report written to {write_report(args.template, target, study)}")
        else:
            run_part(study, args.part, args)
    except Exception as e:
        if report(e) is None or os.environ.get("SMORA_DEBUG"):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
