"""Graceful stops: SIGINT/SIGTERM ask a loop to finish its step, checkpoint and exit."""

from __future__ import annotations

import signal

import torch


class GracefulStop:
    """Context manager recording the first SIGINT/SIGTERM instead of dying on it.

    A second SIGINT raises KeyboardInterrupt (the user insists). `signum` holds the signal
    received; `sync` makes every process of a distributed job agree on it, since a rank that
    stops alone would leave the others waiting in a collective.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._previous.items():
            signal.signal(s, old)

    def sync(self, accelerator) -> None:
        """Adopt the largest signal number seen by any process."""
        if accelerator.num_processes == 1:
            return
        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        self.signum = int(accelerator.reduce(flag, reduction="max").item()) or None
