"""lm-evaluation-harness model `smora`: a base language model with any smora adapter.

Registered under the name `smora` when this module is imported (`python -m smora_cli.lm_eval`
does so before handing over to the harness's own command line):

    python -m smora_cli.lm_eval --model smora \\
        --model_args pretrained=HuggingFaceTB/SmolLM2-135M-Instruct,adapter=runs/x/adapter \\
        --tasks arc_easy --batch_size 8

It is the harness's `hf` model (tokenisation, batching, log-likelihoods, generation unchanged)
whose base model is resolved as smora resolves it (packaged models and GGUF files offline) and
carries the adapter loaded by smora, so token-routed methods (smora, flylora, moe-lora, hydra)
work as trained. A task-routed `more` adapter scores one of its tasks: `task=<name>`. Plain
`lora` adapters are PEFT adapters and also load through the stock model:
`--model hf --model_args pretrained=<base folder>,peft=<adapter>`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import lm_eval.models  # noqa: F401  (registers the stock models before ours)
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from smora_cli.adapters.methods import method_of
from smora_cli.errors import UserInputError


@register_model("smora")
class SmoraLM(HFLM):
    """The harness's HF model plus a smora adapter.

    Args:
        pretrained: base model (Hub id, folder, `.gguf` file, or a packaged model's id);
            default: the base model the adapter records.
        adapter: a smora adapter directory (`adapter_config.json` + weights); none: the base.
        task: for a `more` adapter, the task whose rank map scores (one of its task names).
        **kwargs: the `hf` model's arguments (`batch_size`, `dtype`, `device`, ...).

    Raises:
        UserInputError: no base model, a classifier adapter (task heads, no language-model
            head), a `more` adapter without a known `task`, or `task` for another method.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        adapter: str | None = None,
        task: str | None = None,
        **kwargs,
    ):
        from smora_cli.adapters.io import read_adapter_config
        from smora_cli.models import has_heads, resolve_model_path

        config = read_adapter_config(adapter) if adapter else None
        if adapter and has_heads(adapter):
            raise UserInputError(
                f"{adapter} is a classifier adapter (task heads, no language-model head); the "
                "harness scores language models (causal-lm or seq2seq runs)"
            )
        base = pretrained or (config.base_model_name_or_path if config else None)
        if not base:
            raise UserInputError("model_args: give pretrained=<base model> or adapter=<dir>")
        self._adapter = Path(adapter) if adapter else None
        self._task_index = _task_index(config, task)
        super().__init__(pretrained=resolve_model_path(base), **kwargs)

    def _create_model(self, pretrained: str, **kwargs) -> None:
        super()._create_model(pretrained, **kwargs)
        if self._adapter is not None:
            from smora_cli.adapters.io import load_adapter

            self._model = load_adapter(self._model, self._adapter)

    def _model_call(self, inps, attn_mask=None, labels=None):
        with self._routing():
            return super()._model_call(inps, attn_mask, labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self._routing():
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def _routing(self):
        """The task id of a `more` adapter, for every row of a call."""
        if self._task_index is None:
            return contextlib.nullcontext()
        from smora_cli.adapters.inject import routing_context

        return routing_context(self.model, task_ids=self._task_index)


def _task_index(config, task: str | None) -> int | None:
    routed = config is not None and method_of(config.method).task_routed
    if not routed:
        if task is not None:
            raise UserInputError(
                "model_args: task= selects the rank map of a `more` adapter; this adapter "
                "routes by token (or there is none)"
            )
        return None
    if task not in config.task_names:
        raise UserInputError(
            f"model_args: a `more` adapter scores one of its tasks: task=<one of "
            f"{', '.join(config.task_names)}>; got {task!r}"
        )
    return config.task_names.index(task)
