"""One place that builds the Accelerator, so train and eval form process groups alike."""

from __future__ import annotations

import os

import torch

# Where launchers put a process's global rank: torchrun (accelerate launch), MPI flavours.
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


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


def launch_rank() -> int:
    """This process's global rank as its launcher set it (0 when run alone).

    Readable before any process group exists, so a job can claim its output directory on
    one process only, before the group forms.
    """
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0
