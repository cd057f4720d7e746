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

PLACEHOLDER = re.compile(r"\{\{\s*([a-z]+):([a-z-]+)\s*\}\}")
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


def findings(runs: list[Run], claims: list[dict]) -> str:
    scores = collect.collect_scores(runs)
    lines = [f"- {f.claim}: {f.line()}" for f in (collect.finding(scores, c) for c in claims)]
    return "\n".join(lines) + "\n" if lines else "(no claim)\n"


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


def placeholder_text(study: Study, kind: str, part: str, claims: dict) -> str:
    if part not in PARTS:
        raise UserInputError(f"report template: {{{{{kind}:{part}}}}} names no part")
    runs = plan_part(study, part)
    builders = {
        "scores": lambda: collect.score_table(collect.collect_scores(runs)),
        "ranks": lambda: collect.rank_table(collect.collect_scores(runs)),
        "drops": lambda: collect.drop_table(collect.collect_scores(runs)),
        "router": lambda: collect.router_table(runs),
        "rankmap": lambda: collect.rank_map_table(runs),
        "findings": lambda: findings(runs, claims.get(part, [])),
        "progress": lambda: progress(runs),
        "wall": lambda: wall(study, part),
        "commands": lambda: commands(runs),
    }
    if kind not in builders:
        raise UserInputError(
            f"report template: {{{{{kind}:{part}}}}}: unknown kind {kind!r}; "
            f"use one of {', '.join(builders)}"
        )
    return builders[kind]().rstrip("\n")


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
