"""`smora eval`: score a base model, with or without an adapter, on named tasks or a run's tasks.

Tasks are named as in the run's recipe or a task file, as GLUE tasks (`glue` = all of them,
`mnli` = matched and mismatched) or as offline suite tasks. Task-routed adapters (MoRE) and
classifier heads get the task's index among the tasks the adapter was trained on; a task it
never saw is refused. A task whose split is not on disk is named before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from smora_cli.adapters.methods import method_of
from smora_cli.data.glue import GLUE_SUITE, GLUE_TASKS
from smora_cli.data.tasks import TaskSpec, complete_spec, resolve_task, task_problems
from smora_cli.errors import UserInputError
from smora_cli.evaluation.model_kind import infer_kind
from smora_cli.evaluation.results import results_path
from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS
from smora_cli.kinds import ModelKind
from smora_cli.recipe import read_run_settings

RUNS_DIR = Path("runs")
ADAPTER_DIR = "adapter"


@dataclass
class EvalRequest:
    """What `smora eval` was asked; None means "take it from the run"."""

    run_dir: Path | None = None
    model: str | None = None
    adapter: Path | None = None
    kind: str | None = None
    tasks: list[str] | None = None
    data_dir: Path | None = None
    split: str = "validation"
    limit: int | None = None
    batch_size: int | None = None  # None: the run's eval.batch_size, else 64
    output_path: Path | None = None
    log_samples: bool = False
    no_adapter: bool = False  # score --model alone (e.g. a merged model) on the run's tasks
    task_file: Path | None = None  # tasks in the recipe's `tasks:` format
    skip_missing: bool = False  # score the tasks whose split is present, naming the others
    seed: int = 0  # the `limit` subset and the bootstrap resamples
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS


@dataclass
class EvalPlan:
    """The resolved job: which model, adapter and tasks, and where results go."""

    model: str
    kind: str
    adapter: Path | None
    tasks: list[TaskSpec]
    max_length: int
    target_max_length: int
    output_path: Path
    run_dir: Path | None
    batch_size: int = 64
    chat_template: bool | None = None  # the run's setting; None: the tokenizer decides
    kind_source: str | None = None  # what the kind was read from, when --kind was not given


def latest_run(root: Path = RUNS_DIR) -> Path | None:
    """The most recently finished run under `root` (one with a final adapter)."""
    runs = [p for p in root.glob("*") if (p / ADAPTER_DIR / "adapter_config.json").is_file()]
    return max(runs, key=lambda p: (p / ADAPTER_DIR).stat().st_mtime) if runs else None


def _named_task(name: str, recipe_tasks: dict[str, TaskSpec], data_dir: Path | None) -> TaskSpec:
    if name in recipe_tasks:
        return recipe_tasks[name]
    if name in GLUE_TASKS:
        return TaskSpec(
            name=name, source=f"glue:{name}", data_dir=str(data_dir) if data_dir else None
        )
    from smora_cli.data.offline import OFFLINE_TASKS

    if name in OFFLINE_TASKS:
        return TaskSpec(name=name, source=f"builtin:{name}")
    known = sorted(set(recipe_tasks) | set(GLUE_TASKS) | set(OFFLINE_TASKS)) + ["glue"]
    raise UserInputError(f"--tasks: unknown task {name!r}; known: {', '.join(known)}")


def _task_specs(request: EvalRequest, recipe, kind: str) -> list[TaskSpec]:
    data_dir, names = request.data_dir, request.tasks
    known = {t.name: t for t in recipe.tasks} if recipe else {}
    if request.task_file is not None:
        from smora_cli.evaluation.task_file import load_task_file

        from_file = {t.name: t for t in load_task_file(request.task_file)}
        known.update(from_file)
        names = names or list(from_file)
    if not names:
        if not known:
            raise UserInputError(
                "--tasks or --task-file is required without a run directory (e.g. --tasks glue)"
            )
        names = list(known)
    groups = {"glue": GLUE_SUITE, "mnli": ("mnli_matched", "mnli_mismatched")}
    expanded = [
        n for name in names for n in ([name] if name in known else groups.get(name, [name]))
    ]
    specs = [_named_task(name, known, data_dir) for name in dict.fromkeys(expanded)]
    if data_dir:
        specs = [
            replace(s, data_dir=str(data_dir)) if s.source.startswith("glue:") else s for s in specs
        ]
    for spec in specs:
        problems = task_problems(spec, kind)
        if problems:
            raise UserInputError(f"task {spec.name!r}: {problems[0]}")
    return [complete_spec(spec) for spec in specs]


def _present(specs: list[TaskSpec], split: str, skip_missing: bool, echo) -> list[TaskSpec]:
    """The tasks whose `split` is on disk; the others are named in one line (exit 2), or
    skipped with `skip_missing`."""
    from smora_cli.data.sources import glue_data_dir, split_available

    missing = {}
    for spec in specs:
        task = resolve_task(spec)
        if split_available(task, split) is False:
            missing[spec.name] = glue_data_dir(task) or task.location
    if not missing:
        return specs
    places = ", ".join(sorted({str(place) for place in missing.values()}))
    names = ", ".join(missing)
    if not skip_missing or len(missing) == len(specs):
        hint = "; pass --skip-missing to score the others" if len(missing) < len(specs) else ""
        raise UserInputError(f"no {split!r} split for task(s) {names} in {places}{hint}")
    echo(f"skipping task(s) without a {split!r} split in {places}: {names}")
    return [spec for spec in specs if spec.name not in missing]


def plan(request: EvalRequest, echo=print) -> EvalPlan:
    """Resolve run, model, kind, adapter and tasks, refusing inconsistent combinations."""
    run_dir = request.run_dir
    if run_dir is None and request.model is None and request.adapter is None:
        run_dir = latest_run()
        if run_dir is None:
            raise UserInputError(
                "no run to evaluate: give RUN_DIR, or --model (and --adapter); "
                f"no finished run under ./{RUNS_DIR}"
            )
        echo(f"evaluating the most recent run: {run_dir}")
    recipe = read_run_settings(run_dir) if run_dir else None
    if request.no_adapter and request.adapter is not None:
        raise UserInputError("--no-adapter and --adapter contradict each other")
    adapter = request.adapter or (run_dir / ADAPTER_DIR if run_dir else None)
    if request.no_adapter:
        adapter = None
    model = request.model or (recipe.model.source if recipe else None)
    if model is None and adapter is not None:
        from smora_cli.adapters.io import read_adapter_config

        model = read_adapter_config(adapter).base_model_name_or_path
    if model is None:
        raise UserInputError("--model is required (the adapter does not record its base model)")
    kind, kind_source = request.kind or (recipe.model.kind if recipe else None), None
    if kind is None:
        kind, kind_source = infer_kind(model, adapter, _heads_folders(model, adapter))
    tasks = _present(_task_specs(request, recipe, kind), request.split, request.skip_missing, echo)
    default_out = results_path(run_dir or Path("."), request.split)
    return EvalPlan(
        model=model,
        kind=kind,
        adapter=adapter,
        tasks=tasks,
        max_length=recipe.model.max_length if recipe else 256,
        target_max_length=recipe.model.target_max_length if recipe else 32,
        output_path=request.output_path or default_out,
        run_dir=run_dir,
        batch_size=request.batch_size or (recipe.eval.batch_size if recipe else 64),
        chat_template=recipe.model.chat_template if recipe else None,
        kind_source=kind_source,
    )


def _heads_folders(model: str, adapter: Path | None) -> list[Path]:
    """Folders holding task heads: beside the adapter, or beside a model folded by `smora
    merge`."""
    from smora_cli.models import has_heads, resolve_model_path

    folders = (adapter, Path(resolve_model_path(model)))
    return [f for f in folders if f is not None and has_heads(f)]


def _trained_tasks(model, kind: str) -> list[str] | None:
    """Tasks the adapter/heads index by position, or None when nothing is task-specific."""
    if kind == ModelKind.CLASSIFIER:
        return list(model.task_names)
    from smora_cli.adapters.inject import CONFIG_ATTR

    config = getattr(model, CONFIG_ATTR, None)
    routed = config is not None and method_of(config.method).task_routed
    return list(config.task_names) if routed else None


def _task_index(spec: TaskSpec, trained: list[str] | None) -> int:
    if trained is None:
        return 0
    candidates = [spec.name]
    if spec.source.startswith("glue:"):
        candidates.append(GLUE_TASKS[spec.source.partition(":")[2]].subset)  # mnli_matched -> mnli
    for name in candidates:
        if name in trained:
            return trained.index(name)
    raise UserInputError(
        f"task {spec.name!r} was not trained by this adapter (its routing or "
        f"head is per task); trained tasks: {', '.join(trained)}"
    )


def _peft_classifier(job: EvalPlan) -> bool:
    from smora_cli.adapters.peft_classifier import is_peft_classifier

    return (
        job.kind == ModelKind.CLASSIFIER
        and job.adapter is not None
        and is_peft_classifier(job.adapter)
    )


def _heads_dir(job: EvalPlan) -> Path | None:
    return next(iter(_heads_folders(job.model, job.adapter)), None)


def _load_model(job: EvalPlan):
    """Tokenizer and model; a problem they have names the inferred kind, in case it is wrong."""
    try:
        return _load_model_of_kind(job)
    except UserInputError as e:
        if job.kind_source is None:
            raise
        raise UserInputError(
            f"{e} (model kind {job.kind} was read from {job.kind_source}; if the model is "
            "another kind, pass --kind)"
        ) from e


def _load_model_of_kind(job: EvalPlan):
    from smora_cli.adapters.io import load_adapter
    from smora_cli.models import load_base_model, load_heads, load_tokenizer

    tokenizer = load_tokenizer(job.model, kind=job.kind)
    model = load_base_model(job.model, kind=job.kind)
    if _peft_classifier(job):  # its saved head is the task head
        from smora_cli.adapters.peft_classifier import load_peft_classifier

        return tokenizer, load_peft_classifier(model, job.adapter).eval()
    if job.adapter is not None:
        model = load_adapter(model, job.adapter)
    if job.kind == ModelKind.CLASSIFIER:
        heads = _heads_dir(job)
        if heads is None:
            raise UserInputError(
                "a classifier needs the task heads of a trained run: pass --adapter (or RUN_DIR) "
                "from a `kind: classifier` run, or a model folded by `smora merge` (it carries "
                "the heads)"
            )
        model = load_heads(model, heads)
    return tokenizer, model.eval()


def _warn_if_other_base(model, job: EvalPlan, echo) -> None:
    from smora_cli.adapters.fingerprint import trained_on_other_weights
    from smora_cli.adapters.io import WEIGHTS_NAME

    if job.adapter is None or _peft_classifier(job):
        return
    if trained_on_other_weights(model, job.adapter / WEIGHTS_NAME):
        echo(
            f"warning: adapter {job.adapter} was trained on other base weights than those of "
            f"{job.model} (the weights it adapts differ from the ones it recorded); the scores "
            "are for this combination"
        )


def execute(job: EvalPlan, request: EvalRequest, echo=print) -> dict:
    """Score every task of the plan as `request` says; write and return the report (main
    process)."""
    from smora_cli.evaluation.results import (
        build_report,
        eval_config,
        glue_names,
        samples_path,
        write_results,
        write_samples,
    )
    from smora_cli.evaluation.runner import score_task
    from smora_cli.evaluation.scoring import Scorer
    from smora_cli.models import use_chat_template
    from smora_cli.utils.accel import make_accelerator
    from smora_cli.utils.log import quiet_libraries

    quiet_libraries()
    accelerator = make_accelerator()
    tokenizer, model = _load_model(job)
    _warn_if_other_base(model, job, echo)
    model.to(accelerator.device)
    trained = None if _peft_classifier(job) else _trained_tasks(model, job.kind)  # one head
    scorer = Scorer(
        model,
        job.kind,
        tokenizer,
        max_length=job.max_length,
        target_max_length=job.target_max_length,
        chat=use_chat_template(job.chat_template, job.kind, tokenizer),
    )
    indices = {spec.name: _task_index(spec, trained) for spec in job.tasks}  # refuse first
    for spec in job.tasks:
        index, labels = indices[spec.name], resolve_task(spec).num_labels
        if job.kind == ModelKind.CLASSIFIER and model.num_labels[index] not in (labels, 0):
            raise UserInputError(
                f"task {spec.name!r} has {labels} labels but its head has {model.num_labels[index]}"
            )
    results = {}
    for spec in job.tasks:
        results[spec.name] = score_task(
            scorer,
            resolve_task(spec),
            split=request.split,
            task_id=indices[spec.name],
            batch_size=job.batch_size,
            limit=request.limit,
            accelerator=accelerator,
            log_samples=request.log_samples,
            bootstrap_iters=request.bootstrap_iters,
            seed=request.seed,
        )
        if request.log_samples and accelerator.is_main_process:
            write_samples(samples_path(job.output_path, spec.name), results[spec.name].samples)
    config = eval_config(
        model=job.model,
        kind=job.kind,
        adapter=job.adapter,
        run_dir=job.run_dir,
        split=request.split,
        limit=request.limit,
        batch_size=job.batch_size,
        seed=request.seed,
        bootstrap_iters=request.bootstrap_iters,
        num_processes=accelerator.num_processes,
    )
    report = build_report(results, config, glue_names([resolve_task(s) for s in job.tasks]))
    if accelerator.is_main_process:
        write_results(report, job.output_path)
    return report


def run_eval(request: EvalRequest, echo=print) -> tuple[dict, EvalPlan]:
    """`smora eval` end to end."""
    job = plan(request, echo)
    report = execute(job, request, echo)
    return report, job
