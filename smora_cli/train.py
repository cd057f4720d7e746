"""`smora train`: one Accelerate loop from one CPU to many GPUs.

Reads top to bottom: run directory -> accelerator -> data -> model + adapter -> optimizer ->
batch plan -> resume -> loop (accumulate, clip, step, balance update, log, checkpoint) ->
final adapter -> evaluation. Balance biases change once per optimizer step, after the
optimizer, from counts all-reduced over micro-batches and processes.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from smora_cli import checkpoint as ckpt
from smora_cli import distributed
from smora_cli.adapters import attach, count_parameters, routing_context
from smora_cli.adapters.inject import ParameterCounts
from smora_cli.adapters.io import (
    adapter_state_dict,
    load_adapter_weights,
    saved_rank_map,
    write_adapter,
)
from smora_cli.adapters.state import (
    aux_losses,
    clear_aux,
    on_optimizer_step,
    router_stats,
    weighted_aux_loss,
)
from smora_cli.data.collate import collator_for
from smora_cli.data.mixing import MixturePlan, mixing_rates
from smora_cli.data.sources import load_task_split
from smora_cli.data.tasks import resolve_task
from smora_cli.errors import JobError, NonFiniteError, UserInputError
from smora_cli.kinds import ModelKind
from smora_cli.models import (
    MultiTaskClassifier,
    example_losses,
    head_weights,
    load_base_model,
    load_tokenizer,
    save_heads,
    unwrap,
    use_chat_template,
)
from smora_cli.optim import adamw, lr_factor, set_lr
from smora_cli.preflight import check_eval_split, check_lengths, single_class_warnings
from smora_cli.recipe import Recipe, save_resolved
from smora_cli.utils.accel import make_accelerator
from smora_cli.utils.fs import (
    WRITE_ERRORS,
    atomic_directory,
    atomic_write_text,
    fsync_tree,
    write_failure,
)
from smora_cli.utils.jsonio import json_safe
from smora_cli.utils.log import (
    MetricsLog,
    imbalance_summary,
    imbalanced_layers,
    quiet_libraries,
)
from smora_cli.utils.signals import GracefulStop
from smora_cli.utils.trackers import check_trackers, tracker_scalars

ADAPTER_DIR = "adapter"
RANK_MAP_FILE = "rank_map.json"  # MoRE: {task: {layer: learned rank}}


@dataclass
class RunResult:
    output_dir: Path
    adapter_dir: Path | None
    step: int
    status: str  # "completed" or "interrupted"
    exit_code: int = 0
    eval: dict | None = None
    params: ParameterCounts | None = None
    train_seconds: float = 0.0  # wall time of the optimisation loop (this invocation)


def _accelerator(recipe: Recipe, run_dir: Path):
    from accelerate import DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    train = recipe.train
    if train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserInputError('train.mixed_precision: fp16 needs a GPU; use bf16 or "no" on CPU')
    # Dense masked routing keeps every adapter parameter in the graph, so DDP needs no search
    # for unused ones. Buffers are not broadcast: balance biases change identically on every
    # rank (from all-reduced counts), and each rank's pending counts are its own.
    # (torch 2.13 deprecates broadcast_buffers for forward_sync_buffers, which Accelerate cannot
    # pass yet; the warning says to keep broadcast_buffers=False for rank-local buffers.)
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
    return make_accelerator(
        mixed_precision=train.mixed_precision,
        gradient_accumulation_steps=train.grad_accum,
        log_with=train.log_with or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir)),
        kwargs_handlers=[ddp],
    )


class Trainer:
    """Everything one training run holds; `run()` is the whole job.

    Raises (from `run`):
        UserInputError: run directory, data or model problems found before the first step.
        NonFiniteError: loss or gradients became NaN/inf (names step and module).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        overwrite: bool = False,
        resume: bool = False,
        show_progress: bool = True,
        echo=print,
    ):
        self.recipe = recipe
        self.run_dir = recipe.output_dir
        recipe.train.output_dir = str(self.run_dir)
        self.resume = resume or recipe.train.resume
        self.overwrite = overwrite
        self.show_progress = show_progress
        self.echo = echo
        self.stop = GracefulStop()
        self.imbalanced_count = 0  # layers reported imbalanced at the last log step

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        from accelerate.utils import set_seed

        quiet_libraries()

        recipe = self.recipe
        check_trackers(recipe.train.log_with)  # before the run directory or model is touched
        action = ckpt.check_run_dir(
            self.run_dir, recipe, overwrite=self.overwrite, resume=self.resume
        )
        self.accelerator = accelerator = _accelerator(recipe, self.run_dir)
        if not accelerator.is_main_process:
            self.echo = lambda *args, **kwargs: None
        if accelerator.is_main_process:
            ckpt.apply_run_dir_action(self.run_dir, action)
        accelerator.wait_for_everyone()
        set_seed(recipe.train.seed)  # before the model: heads and adapters init from it
        self.kind = recipe.model.kind
        self.tasks = [resolve_task(spec) for spec in recipe.tasks]
        check_eval_split(self.tasks, recipe.eval)
        with accelerator.main_process_first():  # the offline suite is materialised once
            self.train_data = [
                load_task_split(
                    task,
                    "train",
                    task_id=i,
                    text_to_text=self.kind != ModelKind.CLASSIFIER,
                    limit=task.max_train_examples,
                    shuffle_seed=recipe.train.seed,
                )
                for i, task in enumerate(self.tasks)
            ]
        for line in single_class_warnings(self.train_data):
            self.echo(line)
        self.tokenizer = load_tokenizer(
            recipe.model.tokenizer or recipe.model.source,
            kind=self.kind,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        recipe.model.chat_template = use_chat_template(  # resolved, so eval reads the same
            recipe.model.chat_template, self.kind, self.tokenizer
        )
        self.collate = collator_for(
            self.kind,
            self.tokenizer,
            recipe.model.max_length,
            recipe.model.target_max_length,
            chat=recipe.model.chat_template,
        )
        model = self._build_model()
        check_lengths(model, recipe.model, recipe.model.name_or_path)
        train = recipe.train
        self.optimizer = adamw(
            model, lr=train.lr, router_lr=train.router_lr, weight_decay=train.weight_decay
        )
        self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.sharded = distributed.is_sharded(self.model)  # FSDP: see smora_cli/distributed.py
        self._register_checkpoint_hooks()
        self.plan = self._plan()
        self.start_step = self._resume()
        if accelerator.is_main_process:
            save_resolved(recipe, self.run_dir)
        self.log = MetricsLog(
            self.run_dir, enabled=accelerator.is_main_process, start_step=self.start_step
        )
        if recipe.train.log_with:
            accelerator.init_trackers(self.run_dir.name, config=_flat(recipe.to_dict()))

    def _build_model(self) -> torch.nn.Module:
        recipe = self.recipe
        base = load_base_model(
            recipe.model.source,
            kind=self.kind,
            dtype=recipe.model.dtype,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        if recipe.model.gradient_checkpointing:
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.adapted = attach(base, recipe.adapter)
        if self.kind != ModelKind.CLASSIFIER:
            return base
        num_labels = [0 if t.type == "regression" else t.num_labels for t in self.tasks]
        return MultiTaskClassifier(
            base, num_labels, recipe.model.pooling, [t.name for t in self.tasks]
        )

    def _plan(self) -> MixturePlan:
        train, mixing = self.recipe.train, self.recipe.mixing
        sizes = [len(d) for d in self.train_data]
        rates = mixing_rates(sizes, mixing.strategy, cap=mixing.cap, temperature=mixing.temperature)
        self.rates = dict(zip([t.name for t in self.tasks], rates.tolist(), strict=True))
        return MixturePlan(
            sizes,
            rates,
            global_batch=train.batch_size * self.accelerator.num_processes,
            num_steps=train.max_steps * train.grad_accum,
            seed=train.seed,
            homogeneous=mixing.strategy == "more",
        )

    def _register_checkpoint_hooks(self) -> None:
        """Checkpoints hold adapter weights only, not the frozen base model."""

        def save_hook(models, weights, output_dir):
            if self.accelerator.is_main_process:
                self._write_adapter(Path(output_dir))
            weights.clear()

        def load_hook(models, input_dir):
            load_adapter_weights(self.adapted, Path(input_dir))
            if self.kind == ModelKind.CLASSIFIER:
                from smora_cli.models import load_head_weights

                load_head_weights(unwrap(self.model), Path(input_dir))
            models.clear()

        self.accelerator.register_save_state_pre_hook(save_hook)
        self.accelerator.register_load_state_pre_hook(load_hook)

    def _write_adapter(self, directory: Path, gathered: tuple | None = None) -> None:
        adapter, heads = gathered or (None, None)
        write_adapter(self.adapted, directory, tensors=adapter)
        if self.kind == ModelKind.CLASSIFIER:
            save_heads(unwrap(self.model), directory, tensors=heads)

    def _gather(self) -> tuple[dict, dict | None] | None:
        """Under FSDP, the whole adapter and head tensors on every rank (every rank must call
        this); None otherwise, and rank 0 writes from its own model."""
        if not self.sharded:
            return None
        adapter = adapter_state_dict(self.adapted, root=self.model)
        heads = None
        if self.kind == ModelKind.CLASSIFIER:
            entries = distributed.tensor_entries(unwrap(self.model).task_heads)
            heads = distributed.gather(self.model, entries)
        return adapter, heads

    def _save_sharded(self, directory: Path) -> None:
        """A checkpoint of an FSDP model: what `save_state` writes with the hooks above,
        without the whole model that Accelerate's FSDP path would write first."""
        gathered = self._gather()
        if self.accelerator.is_main_process:
            self._write_adapter(directory, gathered)
        distributed.save_training_state(self.accelerator, self.model, self.optimizer, directory)

    def _load_sharded(self, directory: Path) -> None:
        load_adapter_weights(self.adapted, directory, root=self.model)
        if self.kind == ModelKind.CLASSIFIER:
            entries = distributed.tensor_entries(unwrap(self.model).task_heads)
            distributed.scatter(self.model, entries, head_weights(directory), directory)
        distributed.load_training_state(self.accelerator, self.model, self.optimizer, directory)

    def _resume(self) -> int:
        if not self.resume:
            return 0
        ckpt.clear_stale_temporaries(self.run_dir)
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            self.echo(f"no checkpoint in {self.run_dir}; starting from step 0")
            return 0
        step, path = latest
        ckpt.load_state(self.accelerator, path, load=self._load_sharded if self.sharded else None)
        self.echo(f"resumed from {path} (step {step})")
        return step

    # ------------------------------------------------------------------- loop
    def run(self) -> RunResult:
        self.setup()
        counts = count_parameters(self.adapted)
        self.echo(
            f"{self.recipe.adapter.method}: {counts.adapter:,} trainable adapter parameters, "
            f"{counts.activated:,} activated per token, base {counts.total - counts.trainable:,}"
            f"; tasks {self.rates}"
        )
        baseline = self._evaluate() if self.recipe.eval.baseline and self.start_step == 0 else None
        started = time.perf_counter()
        with self.stop:
            step = self._loop()
        seconds = time.perf_counter() - started
        if self.stop.signum is not None:
            code = 128 + self.stop.signum
            self.echo(
                f"stopped by signal {self.stop.signum} at step {step}; checkpoint saved; "
                f"continue with --resume"
            )
            return RunResult(self.run_dir, None, step, "interrupted", code, None, counts, seconds)
        adapter_dir = self._save_final()
        results = self._evaluate() if self.recipe.eval.at_end else None
        report = self._write_eval(results, baseline)
        self.accelerator.end_training()
        return RunResult(self.run_dir, adapter_dir, step, "completed", 0, report, counts, seconds)

    def _loop(self) -> int:
        train = self.recipe.train
        warmup = int(train.warmup_ratio * train.max_steps)
        self.model.train()
        self.log.restart()
        progress = self._progress()
        step = self.start_step
        while step < train.max_steps and self.stop.signum is None:
            factor = lr_factor(
                step, max_steps=train.max_steps, warmup_steps=warmup, scheduler=train.scheduler
            )
            set_lr(self.optimizer, factor)
            stats = self._optimizer_step(step)
            step += 1
            self.log.record(step, stats, lr=train.lr * factor)
            if step % train.log_steps == 0 or step == train.max_steps:
                self._log(step, progress)
            progress.update(1)
            self.stop.sync(self.accelerator)
            if step % train.save_steps == 0 or (
                self.stop.signum is not None and step < train.max_steps
            ):
                self._save_checkpoint(step)
        progress.close()
        return step

    def _optimizer_step(self, step: int) -> dict:
        """Accumulate `grad_accum` micro-batches, clip, step, update balance biases."""
        train, accelerator = self.recipe.train, self.accelerator
        totals = {
            "loss_sum": 0.0,
            "weight": 0.0,
            "tokens": 0,
            "micro_batches": train.grad_accum,
            "task_loss": {},
            "task_count": {},
            "aux": {},
        }
        for micro in range(train.grad_accum):
            batch = self._batch(step * train.grad_accum + micro)
            totals["tokens"] += int(batch["attention_mask"].sum())
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            # accumulate(): no gradient sync until the last micro-batch, loss divided by
            # grad_accum; DeepSpeed steps its engine at the same boundary.
            with (
                accelerator.accumulate(self.model),
                routing_context(
                    self.model, task_ids=batch["task_ids"], token_masks=_token_masks(batch)
                ),
            ):
                with accelerator.autocast():
                    losses, weights = example_losses(self.model, batch, self.kind)
                    loss = losses.sum() / weights.sum().clamp_min(1.0)
                    aux = aux_losses(self.model)
                    extra = weighted_aux_loss(aux, self.recipe.adapter)
                accelerator.backward(loss if extra is None else loss + extra)
            clear_aux(self.model)
            _accumulate(totals, losses, weights, batch["task_ids"], self.tasks, aux)
        norm = self._clip()
        # fp16's gradient scaler expects overflowing steps: it skips them and lowers its scale.
        scaled = accelerator.scaler is not None
        loss = totals["loss_sum"] / max(totals["weight"], 1.0)
        if not math.isfinite(loss) or not (math.isfinite(norm) or scaled):
            raise NonFiniteError(self._non_finite_message(step + 1, loss, norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not (scaled and self.optimizer.step_was_skipped):
            on_optimizer_step(self.adapted)
        totals["grad_norm"] = norm
        return totals

    def _batch(self, micro_step: int) -> dict:
        accelerator = self.accelerator
        pairs = self.plan.batch(
            micro_step, rank=accelerator.process_index, world_size=accelerator.num_processes
        )
        return self.collate([self.train_data[task][index] for task, index in pairs])

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.recipe.train.max_grad_norm
        if max_norm:
            return float(self.accelerator.clip_grad_norm_(params, max_norm))
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _non_finite_message(self, step: int, loss: float, norm: float) -> str:
        culprit = "unknown module"
        for name, param in unwrap(self.model).named_parameters():
            grad = param.grad
            if not torch.isfinite(param).all() or (
                grad is not None and not torch.isfinite(grad).all()
            ):
                culprit = name
                break
        return (
            f"non-finite training at step {step} (loss {loss}, grad norm {norm}); first "
            f"non-finite parameter or gradient: {culprit}; "
            + ckpt.after_divergence(self.run_dir, step, self.recipe.train)
        )

    # ---------------------------------------------------------------- logging
    def _progress(self):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.recipe.train.max_steps,
            initial=self.start_step,
            unit="step",
            disable=not (self.show_progress and self.accelerator.is_main_process),
            dynamic_ncols=True,
        )

    def _log(self, step: int, progress) -> None:
        stats = router_stats(self.adapted)
        if self.accelerator.num_processes > 1:  # the whole job's losses and tokens/s
            from accelerate.utils import gather_object

            self.log.combine(gather_object([self.log.sums]))
        counts = self.plan.task_counts(step * self.recipe.train.grad_accum)
        seen = {task.name: int(count) for task, count in zip(self.tasks, counts, strict=True)}
        adapter = self.recipe.adapter
        imbalanced = imbalanced_layers(
            stats, experts=adapter.num_expert_blocks, active=adapter.active_experts
        )
        entry = self.log.flush(step, stats, seen, imbalanced)
        if imbalanced and len(imbalanced) != self.imbalanced_count:  # a line when it changes
            self.echo(f"warning: {imbalance_summary(imbalanced, len(stats), step)}")
        self.imbalanced_count = len(imbalanced)
        postfix = {
            "loss": f"{entry['loss']:.4f}",
            "lr": f"{entry['lr']:.2e}",
            "tok_s": f"{entry['tokens_per_s']:.0f}",
        }
        if stats:
            postfix["imbalanced"] = f"{len(imbalanced)}/{len(stats)}"
        progress.set_postfix(postfix)
        if self.recipe.train.log_with:
            self.accelerator.log(tracker_scalars(entry), step=step)

    # ------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, step: int) -> None:
        """Write checkpoints/step-N via a hidden temporary directory and one rename."""
        accelerator = self.accelerator
        final = self.run_dir / ckpt.CHECKPOINTS / f"step-{step}"
        tmp = final.with_name(f".step-{step}.tmp")
        try:
            if accelerator.is_main_process:
                ckpt.clear_stale_temporaries(self.run_dir)
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            extra = {}
            if accelerator.distributed_type == "DEEPSPEED":  # keep the frozen base out of it
                extra["exclude_frozen_parameters"] = True
            if self.sharded:
                self._save_sharded(tmp)
            else:
                accelerator.save_state(str(tmp), **extra)
            if accelerator.is_main_process:
                train = self.recipe.train
                state = ckpt.trainer_state(
                    self.run_dir,
                    step,
                    train,
                    epoch=self._epochs(step),
                    epochs=math.ceil(self._epochs(train.max_steps)),
                )
                ckpt.write_state(tmp, state)
                fsync_tree(tmp)
                ckpt.publish(tmp, final)
                ckpt.rotate(self.run_dir, self.recipe.train.save_total_limit)
        except WRITE_ERRORS as e:
            failure = write_failure(e, f"the checkpoint of step {step}", final.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            raise JobError(f"{failure}; {self._last_good()}") from e
        accelerator.wait_for_everyone()

    def _epochs(self, step: int) -> float:
        """Passes over the training examples after `step` optimizer steps."""
        seen = step * self.recipe.train.grad_accum * self.plan.global_batch
        return seen / max(sum(len(data) for data in self.train_data), 1)

    def _last_good(self) -> str:
        latest = ckpt.latest_checkpoint(self.run_dir)
        return f"last good checkpoint: {latest[1]}" if latest else "no checkpoint was written yet"

    def _save_final(self) -> Path:
        target = self.run_dir / ADAPTER_DIR
        gathered = self._gather()
        if self.accelerator.is_main_process:
            try:
                with atomic_directory(target) as tmp:
                    self._write_adapter(tmp, gathered)
            except WRITE_ERRORS as e:
                failure = write_failure(e, "the final adapter", self.run_dir)
                raise JobError(f"{failure}; {self._last_good()}") from e
            self.echo(f"adapter written to {target}")
            if self.recipe.adapter.method == "more":
                self._save_rank_map(saved_rank_map(target))
        self.accelerator.wait_for_everyone()
        return target

    def _save_rank_map(self, ranks: dict[str, dict[str, int]]) -> None:
        try:
            atomic_write_text(self.run_dir / RANK_MAP_FILE, json.dumps(ranks, indent=1) + "\n")
        except WRITE_ERRORS as e:
            raise JobError(write_failure(e, "MoRE's rank map", self.run_dir)) from e
        self.echo(learned_ranks_line(ranks))

    # -------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict:
        """Task name -> `TaskResult` on `eval.split`, scored as `smora eval` scores."""
        from smora_cli.evaluation.runner import score_task
        from smora_cli.evaluation.scoring import Scorer

        recipe = self.recipe
        scorer = Scorer(
            self.model,
            self.kind,
            self.tokenizer,
            max_length=recipe.model.max_length,
            target_max_length=recipe.model.target_max_length,
            chat=recipe.model.chat_template,
            show_progress=self.show_progress,
        )
        results = {
            task.name: score_task(
                scorer,
                task,
                split=recipe.eval.split,
                task_id=i,
                batch_size=recipe.eval.batch_size,
                limit=recipe.eval.limit,
                accelerator=self.accelerator,
            )
            for i, task in enumerate(self.tasks)
        }
        return results

    def _write_eval(self, final: dict | None, baseline: dict | None) -> dict | None:
        """`eval_<split>.json` in `smora eval`'s format, the untrained baseline beside it."""
        from smora_cli.evaluation.results import (
            build_report,
            eval_config,
            glue_names,
            results_path,
            untrained_path,
            write_results,
        )
        from smora_cli.evaluation.stderr import DEFAULT_BOOTSTRAP_ITERS

        if final is None:
            return None
        recipe = self.recipe

        def report(results: dict, untrained: bool) -> dict:
            config = eval_config(
                model=recipe.model.source,
                kind=self.kind,
                adapter=None if untrained else self.run_dir / ADAPTER_DIR,
                run_dir=self.run_dir,
                split=recipe.eval.split,
                limit=recipe.eval.limit,
                batch_size=recipe.eval.batch_size,
                seed=0,
                bootstrap_iters=DEFAULT_BOOTSTRAP_ITERS,
                num_processes=self.accelerator.num_processes,
                untrained=untrained,
            )
            return build_report(results, config, glue_names(self.tasks))

        path = results_path(self.run_dir, recipe.eval.split)
        reports = {path: report(final, untrained=False)}
        if baseline is not None:
            reports[untrained_path(path)] = report(baseline, untrained=True)
        if self.accelerator.is_main_process:
            for target, content in reports.items():
                write_results(content, target)
        return json_safe(reports[path])


def _token_masks(batch: dict) -> tuple[torch.Tensor, ...]:
    masks = [batch["attention_mask"]]
    if "decoder_attention_mask" in batch:
        masks.append(batch["decoder_attention_mask"])
    return tuple(masks)


def _accumulate(totals, losses, weights, task_ids, tasks, aux) -> None:
    """Add a micro-batch's summed example losses and weights, per task too, and aux losses."""
    totals["loss_sum"] += float(losses.detach().sum())
    totals["weight"] += float(weights.sum())
    for task_id, value, weight in zip(
        task_ids.tolist(), losses.detach().tolist(), weights.tolist(), strict=True
    ):
        name = tasks[task_id].name
        totals["task_loss"][name] = totals["task_loss"].get(name, 0.0) + value
        totals["task_count"][name] = totals["task_count"].get(name, 0.0) + weight
    for name, value in aux.items():
        totals["aux"][name] = totals["aux"].get(name, 0.0) + float(value.detach())


def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested recipe -> {"a.b": scalar} for trackers that accept flat configs only."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


def run(
    recipe: Recipe,
    *,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    echo=print,
) -> RunResult:
    """Train `recipe` end to end, holding its run directory; see `Trainer`."""
    with ckpt.claimed_run_dir(recipe.output_dir):
        return Trainer(
            recipe, overwrite=overwrite, resume=resume, show_progress=show_progress, echo=echo
        ).run()


def learned_ranks_line(ranks: dict[str, dict[str, int]]) -> str:
    """MoRE's learned rank of each task, averaged over the adapted layers, in one line."""
    layers = len(next(iter(ranks.values()), {}))
    means = ", ".join(f"{task} {sum(r.values()) / max(len(r), 1):.1f}" for task, r in ranks.items())
    return f"more: learned rank per task (mean over {layers} layers): {means}"
