"""The GPU check's plumbing: its report (one JSON, one log), time budget, and how it runs
`smora` in-process and other commands as child processes with a deadline."""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from smora_cli.utils.fs import atomic_write_text


class Report:
    """The check's JSON document, rewritten after every step: a killed check keeps its data.

    `status.failures` names every check that failed, `status.skipped` every step not run
    and why; `ok` is true when nothing failed.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.doc = {"meta": meta, "status": {"ok": True, "failures": [], "skipped": []}}
        self.save()

    def section(self, name: str) -> dict:
        return self.doc.setdefault(name, {})

    def fail(self, what: str) -> None:
        print(f"FAILED: {what}", flush=True)
        self.doc["status"]["failures"].append(what)
        self.doc["status"]["ok"] = False

    def skip(self, what: str, why: str) -> None:
        print(f"skipped: {what} ({why})", flush=True)
        self.doc["status"]["skipped"].append({"step": what, "why": why})

    def check(self, what: str, result: dict) -> dict:
        """Record a comparison's failure (result["ok"] false) and return the result."""
        if not result.get("ok"):
            detail = result.get("problem") or f"max rel diff {result.get('max_rel_diff')}"
            self.fail(f"{what}: {detail} (tolerance {result.get('rtol')})")
        return result

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.doc, indent=2, default=str) + "\n")


class Budget:
    """A wall-clock deadline for the whole check (None: no limit)."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def spent(self, reserve: float = 0.0) -> bool:
        left = self.left()
        return left is not None and left <= reserve

    def timeout(self, cap: float) -> float:
        """Seconds a child process may take: `cap`, or what is left if that is less."""
        left = self.left()
        return cap if left is None else max(1.0, min(cap, left))


class Tee:
    """Writes to a stream and to the log file (the check's output and its children's)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()


def smora(args: list[str]) -> tuple[int, str | None]:
    """Run `smora ARGS` in this process: (exit code, the one-line error or None).

    In-process runs skip the interpreter start and imports that a child process pays for
    every one of the check's ~30 runs. A crash (not a SmoraError) is a finding: its
    traceback goes to the log and the check moves on.
    """
    from smora_cli.cli import app
    from smora_cli.errors import SmoraError

    print(f"$ smora {' '.join(args)}", flush=True)
    try:
        code = app(args, standalone_mode=False, prog_name="smora")
        return int(code or 0), None
    except SmoraError as e:
        return e.exit_code, str(e).splitlines()[0]
    except SystemExit as e:
        return int(e.code or 0), None
    except Exception as e:
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return 1, f"{type(e).__name__}: {first}"
    finally:
        release_memory()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def command(cmd: list[str], *, timeout: float, cwd: Path, env: dict | None = None) -> dict:
    """Run `cmd` with its output streamed to ours; kill its process group at `timeout`.

    Returns exit code (None when killed), seconds, whether it timed out, and the last lines.
    """
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own group: a launcher's workers die with it
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        for line in process.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
        process.wait()
    finally:
        timer.cancel()
    return {
        "exit_code": None if killed.is_set() else process.returncode,
        "seconds": round(time.monotonic() - started, 2),
        "timed_out": killed.is_set(),
        "tail": list(tail)[-8:],
    }
