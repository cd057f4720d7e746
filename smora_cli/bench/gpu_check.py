"""The GPU check (issue 16): one command, one JSON and one log, sized for one H200.

Sections, in order of priority (a later one is skipped, and says so, when the time budget
is spent):

* `train`: every method variant trains `plan.steps` steps through `smora train` on a random
  Llama in float32, bf16 autocast and bf16 weights; each bf16 run's per-step loss must be
  within BF16_LOSS_RTOL of the float32 run's. The bf16-weights run then loses its last
  checkpoint and resumes from the one before: adapter and losses must match the
  uninterrupted run. `smora eval` (first variant) and `smora merge` (LoRA) run once.
* `bench`: scripts/bench_adapters.py on the device in bf16 at the layer level (d=4096 on the
  GPU) and the model level (the same Llama), with `--profile`.
* `profile`: from that profile, whether a fused routing kernel could pay (PROFILE_RULE).
* `distributed`: the shipped accelerate configs (DDP, FSDP, ZeRO-2), one process each,
  `plan.distributed_steps` steps: same losses as the plain run, and the adapter each saves
  loads into a plain process.
* `compile`: the model level eager and under `torch.compile`, at `plan.compile_layers`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from smora_cli.bench import check_plan as cp
from smora_cli.bench import wheels
from smora_cli.bench.compare import adapter_tensors, loss_agreement, read_losses, tensor_agreement
from smora_cli.bench.llama import llama_parameters, write_config, write_random_llama
from smora_cli.bench.runner import (
    Budget,
    Report,
    Tee,
    command,
    peak_gb,
    release_memory,
    reset_peak,
    smora,
)

SECTIONS = ("train", "bench", "profile", "distributed", "compile")
ACCELERATE_CONFIGS = {
    "ddp": "ddp.yaml",
    "fsdp": "fsdp.yaml",
    "zero2": "deepspeed_zero2.yaml",
}
PROFILE_RULE = (
    "A fused routing kernel (Triton) can remove at most the routing ops' share of the step. "
    "It is worth writing for a method only if, at the model level in bf16 on the GPU, the "
    "method misses its step-time target (smora, moe-lora, more <= 1.05 x LoRA of the same "
    "rank; flylora <= 1.00 x) AND its routing ops take at least 5 points more of the step's "
    "device time than LoRA's do. Otherwise its gap is GEMM work (the FLOP floor, no kernel "
    "removes it) or launch overhead (the `compile` rows show what torch.compile removes). A "
    "kernel is kept only if measured faster and exact against the torch path."
)
TARGETS = {"smora": 1.05, "moe-lora": 1.05, "more": 1.05, "flylora": 1.00, "hydra": None}
MIN_ROUTING_EXCESS = 0.05


@dataclass
class Check:
    """Everything the sections share."""

    plan: cp.Plan
    repo: Path
    work: Path
    report: Report
    budget: Budget
    variants: list[str]
    env: dict

    @property
    def device(self) -> str:
        return self.plan.device

    def recipe_path(self, variant: str) -> Path:
        return self.work / "recipes" / f"{variant}.yaml"


# --------------------------------------------------------------------------- preflight
def preflight(check: Check) -> dict:
    """Versions, the device, missing packages and unmet requirements of carried wheels."""
    names = ["torch", "transformers", "accelerate", "peft", "datasets", "evaluate", "typer"]
    names += ["safetensors", "tokenizers", "huggingface-hub", "pyarrow", "fsspec", "deepspeed"]
    carried = [wheels.distribution_name(pin) for pin in (*wheels.WHEELS, *wheels.DEEPSPEED_WHEELS)]
    info = {
        "python": platform.python_version(),
        "versions": wheels.installed_versions(names),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "missing": {
            part: [m for m in modules if importlib.util.find_spec(m) is None]
            for part, modules in wheels.NEEDED.items()
        },
        "requirement_problems": wheels.requirement_problems(carried),
    }
    for line in info["requirement_problems"]:
        print(f"warning: {line}", flush=True)
    return info


# --------------------------------------------------------------------------- train
def prepare(check: Check, build_model: bool) -> None:
    """The model's config.json (full and for the compile run); with `build_model` also the
    random Llama, its tokenizer, the two task folders and one recipe per variant."""
    plan, section = check.plan, check.report.section("model")
    write_config(check.work / "config.json", plan.model)
    compiled = {**plan.model, "num_hidden_layers": plan.compile_layers}
    write_config(check.work / "config-compile.json", compiled)
    section.update(spec=plan.model, parameters=llama_parameters(plan.model))
    if not build_model:
        return
    started = time.monotonic()
    model_dir = write_random_llama(
        check.work / "model", plan.model, cp.corpus(plan.examples), device=check.device
    )
    tasks = cp.write_tasks(check.work / "data", plan.examples)
    for variant in cp.VARIANTS:
        path = check.recipe_path(variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        recipe = cp.recipe(plan, model_dir, tasks, variant, check.work / "runs" / variant)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    section.update(directory=str(model_dir), build_s=round(time.monotonic() - started, 2))
    release_memory()


def overrides(values: dict) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()]


def train_run(check: Check, variant: str, run_dir: Path, extra: dict, resume=False) -> dict:
    """One in-process `smora train`: exit code, time, peak memory, per-step losses."""
    args = ["train", str(check.recipe_path(variant)), *overrides(extra)]
    args += [f"train.output_dir={run_dir}", "--quiet"] + (["--resume"] if resume else [])
    reset_peak()
    started = time.monotonic()
    code, error = smora(args)
    entry = {
        "run": run_dir.name,
        "exit_code": code,
        "error": error,
        "seconds": round(time.monotonic() - started, 2),
        "peak_gpu_gib": peak_gb(),
    }
    if (run_dir / "metrics.jsonl").is_file():
        losses = read_losses(run_dir)
        entry["losses"] = [round(losses[s], 6) for s in sorted(losses)]
        entry["tokens_per_s"] = median_rate(run_dir)
    if code != 0:
        check.report.fail(f"smora train {run_dir.name}: exit {code}: {error}")
    return entry


def median_rate(run_dir: Path) -> float | None:
    """Median tokens/s over the logged steps after the first (which pays for warm-up)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["tokens_per_s"] for line in lines[1:] if line.strip()]
    return round(statistics.median(rates), 1) if rates else None


def section_train(check: Check) -> None:
    section = check.report.section("train")
    section.update(runs=[], bf16_vs_float32=[], resume=[])
    section["tolerances"] = {
        "bf16_loss_rtol": cp.BF16_LOSS_RTOL,
        "resume_loss_rtol": cp.RESUME_LOSS_RTOL,
        "resume_adapter_rtol": cp.RESUME_ADAPTER_RTOL,
    }
    for variant in check.variants:
        runs = {}
        for precision, extra in cp.PRECISIONS.items():
            if check.budget.spent():
                check.report.skip(f"train {variant} {precision}", "time budget spent")
                continue
            run_dir = check.work / "runs" / f"{variant}-{precision}"
            if precision != "bf16-weights":  # only the run that resumes needs checkpoints
                extra = {**extra, "train.save_steps": check.plan.steps + 1}
            entry = train_run(check, variant, run_dir, extra)
            section["runs"].append({"variant": variant, "precision": precision, **entry})
            runs[precision] = run_dir if entry["exit_code"] == 0 else None
            check.report.save()
        reference = runs.get(cp.REFERENCE)
        for precision, run_dir in runs.items():
            if precision == cp.REFERENCE or run_dir is None or reference is None:
                continue
            what = f"{variant} {precision} loss vs float32"
            result = loss_agreement(read_losses(reference), read_losses(run_dir), cp.BF16_LOSS_RTOL)
            check.report.check(what, result)
            section["bf16_vs_float32"].append(
                {"variant": variant, "precision": precision, **result}
            )
        if runs.get("bf16-weights") is not None and not check.budget.spent():
            section["resume"].append(resume_check(check, variant, runs["bf16-weights"]))
        check.report.save()
    eval_and_merge(check)


def resume_check(check: Check, variant: str, run_dir: Path) -> dict:
    """Drop the run's last checkpoint, resume from the one before, compare with the whole run."""
    from smora_cli import checkpoint as ckpt

    plan = check.plan
    whole_adapter = adapter_tensors(run_dir / "adapter")
    whole_losses = read_losses(run_dir)
    shutil.rmtree(run_dir / ckpt.CHECKPOINTS / f"step-{plan.steps}")
    extra = cp.PRECISIONS["bf16-weights"]
    entry = train_run(check, variant, run_dir, extra, resume=True)
    entry["variant"] = variant
    if entry["exit_code"] != 0:
        return entry
    after = {s: v for s, v in whole_losses.items() if s > plan.save_steps}
    entry["losses_after_resume"] = check.report.check(
        f"{variant} resumed losses",
        loss_agreement(after, read_losses(run_dir), cp.RESUME_LOSS_RTOL),
    )
    entry["adapter"] = check.report.check(
        f"{variant} resumed adapter",
        tensor_agreement(
            whole_adapter, adapter_tensors(run_dir / "adapter"), cp.RESUME_ADAPTER_RTOL
        ),
    )
    return entry


def eval_and_merge(check: Check) -> None:
    """`smora eval` of the first variant's bf16-autocast run, `smora merge` (fold) of the LoRA
    bf16-weights run, once each."""
    section, runs = check.report.section("train"), check.work / "runs"
    eval_run = runs / f"{check.variants[0]}-bf16-autocast"
    merge_run = runs / "lora-bf16-weights"
    if check.budget.spent() or not (eval_run / "adapter").is_dir():
        check.report.skip("smora eval", f"time budget spent or no run {eval_run.name}")
    else:
        output = check.work / "eval.json"
        args = ["eval", str(eval_run), "--limit", str(check.plan.eval_limit), "--bootstrap-iters"]
        args += ["0", "--output-path", str(output)]
        started = time.monotonic()
        code, error = smora(args)
        entry = {"exit_code": code, "error": error, "seconds": round(time.monotonic() - started, 2)}
        if code == 0:
            entry["results"] = json.loads(output.read_text()).get("results")
        else:
            check.report.fail(f"smora eval: exit {code}: {error}")
        section["eval"] = entry
    if check.budget.spent() or not (merge_run / "adapter").is_dir():
        check.report.skip("smora merge", "time budget spent or no LoRA run to fold")
    else:
        out = check.work / "merged"
        started = time.monotonic()
        args = ["merge", "--adapter", str(merge_run / "adapter"), "--dtype", "bfloat16", str(out)]
        code, error = smora(args)
        entry = {"exit_code": code, "error": error, "seconds": round(time.monotonic() - started, 2)}
        entry["config_written"] = (out / "config.json").is_file()
        if code != 0 or not entry["config_written"]:
            check.report.fail(f"smora merge: exit {code}: {error}")
        section["merge"] = entry
    check.report.save()


# --------------------------------------------------------------------------- bench
def bench_command(check: Check, name: str, flags: list[str], cap: float) -> dict | None:
    """scripts/bench_adapters.py in a child process; its JSON document, or None."""
    output = check.work / f"bench-{name}.json"
    script = str(check.repo / "scripts" / "bench_adapters.py")
    cmd = [sys.executable, script, "--device", check.device, "--dtype", "bfloat16", *flags]
    result = command(
        [*cmd, "--json", str(output)],
        timeout=check.budget.timeout(cap),
        cwd=check.repo,
        env=check.env,
    )
    check.report.section("bench")[f"{name}_run"] = result
    if result["exit_code"] != 0 or not output.is_file():
        check.report.fail(f"bench {name}: exit {result['exit_code']}")
        return None
    return json.loads(output.read_text())


def eager_bench_flags(plan: cp.Plan, work: Path) -> list[str]:
    """Layer and model level, profiled (after --device and --dtype)."""
    flags = ["--level", "layer,model", "--model-config", str(work / "config.json")]
    flags += [*plan.bench, *plan.bench_layer, "--profile"]
    return flags + (["--methods", plan.bench_methods] if plan.bench_methods else [])


def compile_bench_flags(plan: cp.Plan, work: Path, compiled: bool) -> list[str]:
    """The model level at `plan.compile_layers` layers, eager or compiled."""
    flags = ["--level", "model", "--model-config", str(work / "config-compile.json")]
    flags += [*plan.bench, "--methods", plan.compile_methods]
    return flags + (["--compile", "--compile-backend", plan.compile_backend] if compiled else [])


def section_bench(check: Check) -> None:
    section = check.report.section("bench")
    document = bench_command(check, "eager", eager_bench_flags(check.plan, check.work), cap=240)
    if document is not None:
        section["eager"] = document
    check.report.save()


def section_profile(check: Check) -> None:
    """Apply PROFILE_RULE to the eager bench's model-level rows and profiles."""
    section = check.report.section("profile")
    section["rule"] = PROFILE_RULE
    document = check.report.section("bench").get("eager")
    if not document or "profile" not in document:
        check.report.skip("profile decision", "no profiled bench run")
        return
    section["decisions"] = kernel_decisions(document)
    check.report.save()


def kernel_decisions(document: dict) -> list[dict]:
    """Per routed method at the model level: ratio, FLOP floor, routing excess, decision."""
    decisions = []
    for row in document["results"]:
        if row["level"] != "model" or row["method"] not in TARGETS:
            continue
        profile = document["profile"].get(f"model/{row['method']}/{row['r']}", {})
        excess = profile.get("routing_excess")
        target = TARGETS[row["method"]]
        ratio = row["train_ratio"]
        misses = target is not None and ratio is not None and ratio > target
        pays = misses and excess is not None and excess >= MIN_ROUTING_EXCESS
        decisions.append(
            {
                "method": row["method"],
                "train_ratio": ratio,
                "flop_ratio": row["flop_ratio"],
                "target": target,
                "routing_share": profile.get("routing_share"),
                "routing_excess": excess,
                "decision": "write a fused routing kernel" if pays else "no kernel",
            }
        )
    return decisions


def section_compile(check: Check) -> None:
    """The model level at `compile_layers` layers, eager then compiled, same methods."""
    plan, section = check.plan, check.report.section("compile")
    eager_flags = compile_bench_flags(plan, check.work, compiled=False)
    eager = bench_command(check, "compile-eager", eager_flags, cap=120)
    if eager is None or check.budget.spent():
        check.report.skip("compiled bench", "eager reference failed or time budget spent")
        return
    compiled_flags = compile_bench_flags(plan, check.work, compiled=True)
    compiled = bench_command(check, "compiled", compiled_flags, cap=300)
    if compiled is None:
        return
    section.update(eager=eager, compiled=compiled, backend=plan.compile_backend)
    section["speedup"] = compile_speedups(eager, compiled)
    check.report.save()


def compile_speedups(eager: dict, compiled: dict) -> list[dict]:
    """Eager ms / compiled ms per model-level adapter row, with the compile time."""
    before = {(r["method"], r["r"]): r for r in eager["results"] if r["train_ms"]}
    rows = []
    for row in compiled["results"]:
        ref = before.get((row["method"], row["r"]))
        if ref is None or not row["train_ms"]:
            continue
        rows.append(
            {
                "method": row["method"],
                "r": row["r"],
                "eager_train_ms": ref["train_ms"],
                "compiled_train_ms": row["train_ms"],
                "train_speedup": round(ref["train_ms"] / row["train_ms"], 3),
                "compiled_train_ratio": row["train_ratio"],
                "compile_s": row["compile_s"],
            }
        )
    return rows


# --------------------------------------------------------------------------- distributed
def section_distributed(check: Check) -> None:
    """Each accelerate config with one process against the plain run of the same recipe."""
    plan, section = check.plan, check.report.section("distributed")
    section["loss_rtol"] = cp.DISTRIBUTED_LOSS_RTOL
    extra = {**cp.PRECISIONS["bf16-autocast"], "train.max_steps": plan.distributed_steps}
    extra["train.save_steps"] = plan.distributed_steps
    root = check.work / "distributed"
    plain = train_run(check, "smora", root / "plain", extra)
    section["plain"] = plain
    if plain["exit_code"] != 0:
        check.report.skip("accelerate configs", "the plain run failed")
        return
    for name, config in ACCELERATE_CONFIGS.items():
        why = distributed_unavailable(check, name)
        if why:
            check.report.skip(f"accelerate {name}", why)
            section[name] = {"skipped": why}
            continue
        if check.budget.spent():
            check.report.skip(f"accelerate {name}", "time budget spent")
            continue
        section[name] = accelerate_run(check, name, config, root, extra)
        check.report.save()


def distributed_unavailable(check: Check, name: str) -> str | None:
    if name != "zero2":
        return None
    if check.device == "cpu":
        return "DeepSpeed needs a GPU here (accelerate launches it with --cpu as plain DDP)"
    if importlib.util.find_spec("deepspeed") is None:
        return "deepspeed is not installed (scripts/gpu_check.sh fetch-wheels DIR --deepspeed)"
    return None


def accelerate_run(check: Check, name: str, config: str, root: Path, extra: dict) -> dict:
    """`accelerate launch --config_file CONFIG --num_processes 1 -m smora_cli train ...`."""
    run_dir = root / name
    config_path = check.repo / "scripts" / "accelerate" / config
    if check.device == "cpu" and name == "fsdp":
        config_path = cpu_fsdp_config(config_path, root)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(config_path), "--num_processes", "1"]
    train = ["-m", "smora_cli", "train", str(check.recipe_path("smora")), *overrides(extra)]
    train += [f"train.output_dir={run_dir}", "--quiet"]
    entry = command(
        [*launch, *train], timeout=check.budget.timeout(180), cwd=check.repo, env=check.env
    )
    if entry["exit_code"] != 0:
        check.report.fail(f"accelerate {name}: exit {entry['exit_code']}")
        return entry
    plain = root / "plain"
    entry["losses"] = check.report.check(
        f"accelerate {name} losses vs plain",
        loss_agreement(read_losses(plain), read_losses(run_dir), cp.DISTRIBUTED_LOSS_RTOL),
    )
    entry["adapter_loads"] = adapter_loads(check, name, run_dir / "adapter")
    return entry


def cpu_fsdp_config(config: Path, folder: Path) -> Path:
    """The FSDP config without sync_module_states (FSDP refuses it on a CPU) and so without
    RAM-efficient loading (which needs it). Accelerate then runs it as DDP over gloo: through
    accelerate, FSDP needs a GPU."""
    settings = yaml.safe_load(config.read_text())
    settings["fsdp_config"].update(
        fsdp_sync_module_states=False, fsdp_cpu_ram_efficient_loading=False
    )
    path = folder / "fsdp-cpu.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def adapter_loads(check: Check, name: str, adapter_dir: Path) -> dict:
    """Load the adapter a launched run saved into a plain (not distributed) model."""
    from smora_cli.adapters import load_adapter
    from smora_cli.errors import SmoraError
    from smora_cli.models import load_base_model

    try:
        base = load_base_model(str(check.work / "model"), kind="causal-lm", dtype="bfloat16")
        load_adapter(base, adapter_dir)
        result = {"ok": True}
    except (SmoraError, OSError) as e:
        result = {"ok": False, "problem": str(e).splitlines()[0][:300]}
        check.report.fail(f"accelerate {name}: its adapter does not load: {result['problem']}")
    release_memory()
    return result


# --------------------------------------------------------------------------- main
RUNNERS = {
    "train": section_train,
    "bench": section_bench,
    "profile": section_profile,
    "distributed": section_distributed,
    "compile": section_compile,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="the same steps on the CPU with tiny shapes"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="cpu = --dry-run")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default $OUT)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    parser.add_argument("--budget-s", type=float, default=None, help="default 450 (GPU)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument("--variants", default=",".join(cp.VARIANTS), help=",".join(cp.VARIANTS))
    parser.add_argument("--print-wheels", action="store_true", help="the pins to carry, and exit")
    return parser.parse_args(argv)


def validated(args: argparse.Namespace) -> argparse.Namespace:
    """Resolve defaults; a bad flag raises UserInputError (one line, exit 2)."""
    from smora_cli.errors import UserInputError

    args.device = "cpu" if args.dry_run else (args.device or "cuda")
    args.sections = [s for s in args.sections.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.sections) - set(SECTIONS)) + sorted(
        set(args.variants) - set(cp.VARIANTS)
    )
    if unknown:
        raise UserInputError(
            f"unknown sections/variants {unknown}; sections: {', '.join(SECTIONS)}; "
            f"variants: {', '.join(cp.VARIANTS)}"
        )
    if "profile" in args.sections and "bench" not in args.sections:
        raise UserInputError("--sections profile reads the bench section's profile: add bench")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("no CUDA device is visible to torch; use --dry-run for the CPU check")
    if args.out is None:
        out = os.environ.get("OUT")
        args.out = Path(out) if out else Path("runs") / f"gpu-check-{args.device}"
    if args.budget_s is None and args.device == "cuda":
        args.budget_s = 450.0
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        raise UserInputError(f"--work {args.work} is not empty; give a new or empty folder")
    return args


def check_variables(work: Path) -> dict[str, str]:
    """Offline, with every cache inside the scratch folder."""
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "SMORA_CACHE": str(work / "cache"),
        "HF_DATASETS_CACHE": str(work / "hf-datasets"),
        "HF_HOME": os.environ.get("HF_HOME") or str(work / "hf"),
    }


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """Set `variables` in this process (in-process runs read them) and restore them after."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def child_env(variables: dict[str, str], repo: Path) -> dict[str, str]:
    """Child processes: this process's environment, `variables`, the checkout importable."""
    env = {**os.environ, **variables}
    paths = [str(repo), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_sections(check: Check, sections: list[str], missing: list[str], started: float) -> None:
    """Each section in turn; a crash in one is recorded (traceback in the log), not fatal."""
    report = check.report
    build_model = bool({"train", "distributed"} & set(sections))
    if build_model and missing:
        report.fail(f"train: missing {missing}; carry wheels (scripts/gpu_check.sh)")
    built = guarded(report, "prepare", lambda: prepare(check, build_model and not missing))
    for name in sections:
        if name in ("train", "distributed") and (missing or not built):
            report.skip(name, f"missing packages {missing}" if missing else "no model")
        elif check.budget.spent():
            report.skip(name, "time budget spent")
        else:
            print(f"\n===== {name} ({time.monotonic() - started:.0f} s)", flush=True)
            guarded(report, name, lambda name=name: RUNNERS[name](check))
        report.save()


def guarded(report: Report, name: str, step) -> bool:
    """Run `step`; an exception fails the check by name and returns False."""
    try:
        step()
        return True
    except Exception as e:
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        report.fail(f"{name} crashed: {type(e).__name__}: {first}")
        return False


def run(args: argparse.Namespace, repo: Path) -> int:
    """The whole check; returns the exit code (0 all passed, 1 something failed)."""
    plan = cp.Plan.cpu() if args.device == "cpu" else cp.Plan.gpu()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="smora-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    variables = check_variables(work)
    started = time.monotonic()
    meta = {
        "plan": plan.name,
        "device": args.device,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "budget_s": args.budget_s,
        "sections": args.sections,
        "variants": args.variants,
        "command": sys.argv,
        "work": str(work),
        "wheels": list(wheels.WHEELS),
    }
    report = Report(args.out / "gpu_check.json", meta)
    env = child_env(variables, repo)
    check = Check(plan, repo, work, report, Budget(args.budget_s), args.variants, env)
    report.doc["preflight"] = info = preflight(check)
    missing = info["missing"]["train"]
    try:
        with environment(variables):
            run_sections(check, args.sections, missing, started)
    finally:
        report.doc["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        report.save()
        if not args.keep_work and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    status = report.doc["status"]
    print(
        f"\ngpu check: {'passed' if status['ok'] else 'FAILED'} in "
        f"{report.doc['meta']['elapsed_s']} s; {len(status['failures'])} failures, "
        f"{len(status['skipped'])} skipped; {report.path}",
        flush=True,
    )
    return 0 if status["ok"] else 1


def main(argv: list[str] | None = None, repo: Path | None = None) -> int:
    """Entry point of scripts/gpu_check.py: one line `error: ...` and exit 2 on bad flags."""
    from smora_cli.errors import UserInputError

    args = parse_args(argv)
    if args.print_wheels:
        print(" ".join(wheels.WHEELS))
        return 0
    try:
        args = validated(args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "gpu_check.log", "w") as log, contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(Tee(sys.stdout, log)))
        stack.enter_context(contextlib.redirect_stderr(Tee(sys.stderr, log)))
        return run(args, repo or Path(__file__).resolve().parents[2])
