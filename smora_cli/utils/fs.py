"""Atomic file-system writes: a directory or file appears complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from smora_cli.errors import UserInputError

# What a failed write raises: the OS, torch's zip writer (a RuntimeError about stream
# positions when the disk fills) and safetensors (its own error type).
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
_LOW_SPACE = 1 << 20  # bytes: below this, a failed write is blamed on the full disk


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` when the block succeeds.

    The temporary directory sits beside `target` (same file system, so the final rename is
    atomic); on any exception it is removed and `target` is left as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise UserInputError(f"cannot write to {target.parent}: {e.strerror or e}") from e
    try:
        yield tmp
        fsync_tree(tmp)
        _default_permissions(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_permissions(root: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; published results get the usual umask
    permissions, so colleagues on a shared cluster file system can read them."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root` to disk.

    Data must be on disk before a rename publishes a directory, or a crash can leave a
    complete-looking directory with empty files.
    """
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def write_failure(error: BaseException, what: str, directory: str | os.PathLike) -> str:
    """One line for a failed write of `what` into `directory`, naming a full disk.

    torch and safetensors wrap ENOSPC in messages about stream positions or I/O errors;
    the free space left says what happened.
    """
    free = _free_bytes(Path(directory))
    low = free is not None and free < _LOW_SPACE
    if low or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        reason = "no space left on device" + (f" ({free // 1024} KiB free)" if low else "")
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    else:
        text = str(error).strip()
        reason = text.splitlines()[0][:200] if text else type(error).__name__
    return f"cannot write {what} in {directory}: {reason}"


def _free_bytes(directory: Path) -> int | None:
    for path in (directory, *directory.parents):
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
    return None


def clear_leftovers(target: str | os.PathLike) -> None:
    """Remove what a killed `atomic_directory(target)` left beside it.

    Call only while holding `target`'s lock: another writer's temporary looks the same.
    A set-aside old version is kept when `target` itself is missing (the kill fell between
    the two renames), so that nothing the user had is lost.
    """
    target = Path(target)
    leftovers = list(target.parent.glob(f".{glob.escape(target.name)}.tmp-*"))
    if target.exists():
        leftovers += target.parent.glob(f".{glob.escape(target.name)}.old-*")
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
