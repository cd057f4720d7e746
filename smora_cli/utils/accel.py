"""One place that builds the Accelerator, so train and eval form process groups alike."""

from __future__ import annotations

import torch


def make_accelerator(**kwargs):
    """An `accelerate.Accelerator`; without a GPU it runs several processes over gloo.

    Accelerate only forms a CPU process group when told to run on the CPU, so a CPU-only
    machine launched with torchrun or `accelerate launch --multi_gpu` still gets one.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu_only = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    # Accelerate keeps one process-wide state and refuses another precision later in the same
    # process (a sweep of runs, a notebook): each job starts from a fresh state; the process
    # group (PartialState) is kept.
    AcceleratorState._reset_state()
    return Accelerator(cpu=cpu_only, **kwargs)


def is_main_process() -> bool:
    """True on the process that reports (rank 0), also before any Accelerator exists."""
    from accelerate import PartialState

    return PartialState().is_main_process
