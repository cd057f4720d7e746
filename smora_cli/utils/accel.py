"""One place that builds the Accelerator, so train and eval form process groups alike."""

from __future__ import annotations

import os
from pathlib import Path

from smora_cli.errors import UserInputError

# Where launchers put a process's global rank: torchrun (accelerate launch), MPI flavours.
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def make_accelerator(**kwargs):
    """An `accelerate.Accelerator`; without a GPU it runs several processes over gloo.

    Accelerate only forms a CPU process group when told to run on the CPU, so a CPU-only
    machine launched with torchrun or `accelerate launch --multi_gpu` still gets one.
    """
    check_launch()
    import torch
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


def check_launch() -> None:
    """Refuse a job that `accelerate launch` was asked to run on several processes but started
    once: without --multi_gpu (or a config file that selects a distributed type) its simple
    launcher runs the script as one process, which would train alone, silently.

    The simple launcher is the one that sets ACCELERATE_USE_CPU; no world size means no process
    group; the count asked for is read from the launcher's command line, or, when a config file
    gave it, from the MASTER_ADDR the launcher adds only for several processes.

    Raises:
        UserInputError: saying how to launch several processes.
    """
    if "ACCELERATE_USE_CPU" not in os.environ or any(v in os.environ for v in WORLD_SIZE_VARIABLES):
        return
    asked = _launcher_processes()
    if asked is None and "MASTER_ADDR" in os.environ and "MASTER_ADDR" not in _launcher_env():
        asked = "several"
    if asked is None or asked == "1":
        return
    raise UserInputError(
        f"accelerate launch was asked for {asked} processes but started this one alone (without "
        "--multi_gpu it runs the script once); launch with: accelerate launch --multi_gpu "
        "--num_processes N -m smora_cli ... (on a CPU-only machine too: smora forms a gloo "
        "group), or give a config file whose distributed_type is MULTI_GPU"
    )


def _launcher_arguments() -> list[str]:
    try:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
    except OSError:  # no /proc: nothing to read
        return []


def _launcher_processes() -> str | None:
    """The --num_processes the parent `accelerate launch` command line gives, if any."""
    arguments = _launcher_arguments()
    for i, argument in enumerate(arguments):
        flag, equals, value = argument.partition("=")
        if flag in ("--num_processes", "--num-processes"):
            return value if equals else next(iter(arguments[i + 1 : i + 2]), None)
    return None


def _launcher_env() -> set[str]:
    """Names of the parent process's environment variables (empty when unreadable)."""
    try:
        raw = Path(f"/proc/{os.getppid()}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {"MASTER_ADDR"}  # unknown: assume the user set it
    return {item.partition("=")[0] for item in raw.split("\0") if item}
