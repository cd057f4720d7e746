"""The study's report: a markdown template whose placeholders are filled from results files.

The template holds all the prose. A placeholder `{{KIND:PART}}` is replaced by a table or list
built from PART's finished runs; the template's YAML front matter (between `---` lines) holds
the claims each part tests:

    ---
    claims:
      glue-mixture:
        - {claim: "MoRE beats LoRA", a: more, b: lora, expected: 1}   # task: average
    ---

KINDs: scores (a row per group, a column per task), ranks (rank sensitivity), drops (merged
minus single-task scores), router (load statistics), findings (the claims' verdicts),
progress (finished runs of the plan), wall (wall time spent), commands (the plan's commands).
`findings` alone may name several parts, `{{findings:PART,PART}}`: one table of every claim,
the report's "at a glance".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from smora_cli.errors import UserInputError
from smora_cli.study import collect
from smora_cli.study.execute import WALL_TIME
from smora_cli.study.plan import PARTS, Run, Study, part_dir, plan_part
from smora_cli.utils.fs import atomic_write_text

PLACEHOLDER = re.compile(r"\{\{\s*([a-z]+):([a-z,-]+)\s*\}\}")
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict, str]:
    """(the template's front matter as data, the markdown after it)."""
    match = FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as e:
        raise UserInputError(f"the report template's front matter is not YAML: {e}") from e
    return data, text[match.end() :]


def findings(runs_by_part: dict[str, list[Run]], claims: dict[str, list[dict]]) -> str:
    """A table row per claim of each part: the difference it rests on and the verdict."""
    rows = []
    for part, runs in runs_by_part.items():
        scores = collect.collect_scores(runs)
        for f in (collect.finding(scores, claim) for claim in claims.get(part, [])):
            rows.append([f.claim, part, f.comparison, f.difference(), f.verdict])
    if not rows:
        return "(no claim)\n"
    return collect.md_table(["claim", "part", "comparison", "difference", "verdict"], rows)


def progress(runs: list[Run]) -> str:
    done = sum(run.result.is_file() for run in runs)
    return f"{done} of {len(runs)} runs finished"


def wall(study: Study, part: str) -> str:
    path = part_dir(study, part) / WALL_TIME
    if not path.is_file():
        return "not run"
    data = json.loads(path.read_text())
    return f"{data['seconds'] / 60:.0f} min over {data['invocations']} invocations"


def commands(runs: list[Run]) -> str:
    return "```\n" + "\n".join(run.shell() for run in runs) + "\n```\n"


def placeholder_text(study: Study, kind: str, parts: str, claims: dict) -> str:
    names = parts.split(",")
    for part in names:
        if part not in PARTS:
            raise UserInputError(f"report template: {{{{{kind}:{parts}}}}} names no part {part!r}")
    if kind == "findings":
        return findings({part: plan_part(study, part) for part in names}, claims).rstrip("\n")
    if len(names) > 1:
        raise UserInputError(
            f"report template: {{{{{kind}:{parts}}}}}: only findings takes several parts"
        )
    return part_text(study, kind, names[0]).rstrip("\n")


def part_text(study: Study, kind: str, part: str) -> str:
    runs = plan_part(study, part)
    builders = {
        "scores": lambda: collect.score_table(collect.collect_scores(runs)),
        "ranks": lambda: collect.rank_table(collect.collect_scores(runs)),
        "drops": lambda: collect.drop_table(collect.collect_scores(runs)),
        "router": lambda: collect.router_table(runs),
        "rankmap": lambda: collect.rank_map_table(runs),
        "progress": lambda: progress(runs),
        "wall": lambda: wall(study, part),
        "commands": lambda: commands(runs),
    }
    if kind not in builders:
        raise UserInputError(
            f"report template: {{{{{kind}:{part}}}}}: unknown kind {kind!r}; "
            f"use one of findings, {', '.join(builders)}"
        )
    return builders[kind]()


def fill(template: str, study: Study) -> str:
    """The template with every placeholder replaced (the front matter dropped)."""
    data, body = split_front_matter(template)
    claims = data.get("claims", {})
    return PLACEHOLDER.sub(lambda m: placeholder_text(study, m[1], m[2], claims), body)


def write_report(template: Path, target: Path, study: Study) -> Path:
    """Fill `template` and write the report to `target` (whole or not at all)."""
    if not template.is_file():
        raise UserInputError(f"report template {template} does not exist")
    atomic_write_text(target, fill(template.read_text(), study))
    return target
