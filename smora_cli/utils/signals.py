"""Stops by signal: a training loop finishes its step and checkpoints (`GracefulStop`);
anywhere else SIGINT/SIGTERM raise `Interrupted`, so cleanup runs and the CLI says what
happened instead of dying silently."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal stopped a command outside a checkpointing loop; exit code 128 + signal.

    A BaseException like KeyboardInterrupt, so that `except Exception` handlers do not
    swallow it while `finally` blocks (locks, temporary files) still run.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupting_signals() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise `Interrupted`; the previous handlers return after."""
    previous = {s: signal.signal(s, _interrupt) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class GracefulStop:
    """Context manager recording the first SIGINT/SIGTERM instead of dying on it.

    A second SIGINT raises `Interrupted` (the user insists). `signum` holds the signal
    received; `sync` makes every process of a distributed job agree on it, since a rank that
    stops alone would leave the others waiting in a collective.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise Interrupted(signum)
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._previous.items():
            signal.signal(s, old)

    def sync(self, accelerator) -> None:
        """Adopt the largest signal number seen by any process."""
        if accelerator.num_processes == 1:
            return
        import torch

        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        self.signum = int(accelerator.reduce(flag, reduction="max").item()) or None
