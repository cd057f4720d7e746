"""One smora process per output directory: a lock file beside the directory it guards.

`runs/.NAME.lock` sits next to `runs/NAME` (so replacing NAME leaves it alone) and records
the holder's pid, host, command and start time, which the refusal names. Exclusion comes
from the kernel's `flock` on that file, which dies with its process: a lock file left behind
by a killed run is stale by construction and simply taken over. `flock` works across hosts on
NFS (Linux emulates it with POSIX record locks), GPFS, CephFS and Lustre mounted with
`-o flock`; where the file system refuses it, the recorded holder decides instead: a dead pid
on this host is stale, a holder on another host is trusted until its file is removed.

A process that already holds a directory's lock may take it again (a sweep holds its cell
while training it): locks are counted per process and released with the outermost holder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from smora_cli.errors import UserInputError

# flock errors that mean "this file system cannot lock", not "someone holds it".
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_UNREADABLE_GRACE_S = 10.0
_held: dict[Path, list] = {}  # target -> [DirectoryLock, depth] held by this process


class DirectoryLocked(UserInputError):
    """Another process holds the directory; the message names it."""


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.lock")


class DirectoryLock:
    """Context manager holding `target`'s lock; `what` names the job in refusals.

    Raises (on entry):
        DirectoryLocked: another live process holds it.
        UserInputError: the lock file cannot be created (missing permissions, a file in
            the way of the parent directory).
    """

    def __init__(self, target: str | os.PathLike, what: str):
        self.target = Path(os.path.abspath(target))
        self.shown = Path(target)  # as the user wrote it, for messages
        self.path = lock_path(self.target)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        held = _held.get(self.target)
        if held is not None:
            held[1] += 1
            return self
        self._acquire()
        _held[self.target] = [self, 1]
        return self

    def __exit__(self, *exc) -> None:
        held = _held[self.target]
        held[1] -= 1
        if held[1] == 0:
            del _held[self.target]
            held[0]._release()

    # ------------------------------------------------------------------ acquire
    def _acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            blocking = next((p for p in self.path.parents if p.is_file()), None)
            reason = f"{blocking} is a file" if blocking else (e.strerror or str(e))
            raise UserInputError(f"cannot create {self.shown}: {reason}") from e
        while True:  # repeats only when a releasing holder removed the file under us
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _wait_for_holder(fd)
                os.close(fd)
                raise self._locked(holder) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in _NO_FLOCK:
                    raise
                self._acquire_without_flock()
                return
            if _same_file(fd, self.path):
                self._fd = fd
                self._write_holder()
                return
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserInputError(
                f"cannot write in {self.path.parent} (for {self.shown} and its lock file): "
                f"{e.strerror or e}"
            ) from e

    def _acquire_without_flock(self) -> None:
        """Exclusive creation, with the recorded holder deciding whether a file is stale."""
        while True:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = _read_holder_at(self.path)
                if not _is_stale(holder, self.path):
                    raise self._locked(holder, manual=True) from None
                self.path.unlink(missing_ok=True)
                continue
            self._write_holder()
            return

    def _write_holder(self) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": f"smora {self.what}",
            "argv": sys.argv[1:],
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(self._fd)

    def _locked(self, holder: dict | None, *, manual: bool = False) -> DirectoryLocked:
        if holder is None:
            who = "another process"
        else:
            who = (
                f"{holder.get('command', 'smora')} (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')})"
            )
        hint = f"; if that process is gone, delete {self.path}" if manual else ""
        return DirectoryLocked(
            f"{self.shown} is in use by {who}; wait for it to finish or choose another "
            f"directory{hint}"
        )

    # ------------------------------------------------------------------ release
    def _release(self) -> None:
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):  # unlink before unlocking: nobody sees it free
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> dict | None:
    try:
        return _parse(os.pread(fd, 4096, 0))
    except OSError:
        return None


def _wait_for_holder(fd: int, timeout_s: float = 1.0) -> dict | None:
    """The holder's record, given a moment to appear: a process that has just taken the lock
    writes its record right after, and a twin started at the same instant can land between."""
    deadline = time.monotonic() + timeout_s
    while (holder := _read_holder(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder


def _read_holder_at(path: Path) -> dict | None:
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _parse(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_stale(holder: dict | None, path: Path) -> bool:
    """A holder on this host whose process is gone; an unreadable record is stale once it
    is older than a writer needs (other hosts' processes cannot be checked)."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
