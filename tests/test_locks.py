"""One process per output directory: lock files, stale locks, and run-directory claims."""

import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from smora_cli.checkpoint import apply_run_dir_action, claimed_run_dir
from smora_cli.errors import UserInputError
from smora_cli.utils import lock as lock_module
from smora_cli.utils.lock import DirectoryLock, DirectoryLocked, lock_path

HOLD = textwrap.dedent(
    """
    import sys, time
    from smora_cli.utils.lock import DirectoryLock
    with DirectoryLock(sys.argv[1], "merge"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def holder(target):
    """A separate process holding `target`'s lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    target = tmp_path / "out"
    process = holder(target)
    try:
        with pytest.raises(DirectoryLocked) as info, DirectoryLock(target, "merge"):
            pass
        message = str(info.value)
        host = socket.gethostname()
        assert message.startswith(f"{target} is in use by smora merge (pid {process.pid} on {host}")
        assert "\n" not in message
    finally:
        process.kill()
        process.wait()
    # kill -9 left the lock file behind: the kernel lock died with its process.
    assert lock_path(target).is_file()
    with DirectoryLock(target, "merge"):
        record = json.loads(lock_path(target).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "smora merge"
    assert not lock_path(target).exists()


def test_a_holder_that_has_not_written_its_record_yet_is_still_named(tmp_path):
    """Trial: two trainings started at once; the loser took its turn between the winner's
    flock and its record, and said "another process". It now waits a moment for the record."""
    target = tmp_path / "out"
    path = lock_path(target)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # a flock of its own open file
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    record = {"pid": 4242, "host": "node7", "command": "smora train", "started": "now"}
    late = threading.Timer(0.2, os.pwrite, (fd, json.dumps(record).encode(), 0))
    late.start()
    try:
        with pytest.raises(DirectoryLocked, match=r"in use by smora train \(pid 4242 on node7"):
            with DirectoryLock(target, "train"):
                pass
        os.ftruncate(fd, 0)  # a holder that never writes is still refused, unnamed
        with pytest.raises(DirectoryLocked, match="in use by another process"):
            with DirectoryLock(target, "train"):
                pass
    finally:
        late.join()
        os.close(fd)


def test_the_same_process_may_nest_and_releases_with_the_outermost(tmp_path):
    target = tmp_path / "cell"
    with DirectoryLock(target, "sweep-granularity"):
        with DirectoryLock(target, "train"):
            assert lock_path(target).is_file()
        assert lock_path(target).is_file()  # still held by the outer one
    assert not lock_path(target).exists()


def test_without_flock_the_recorded_holder_decides(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    target = tmp_path / "run"
    path = lock_path(target)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = {"pid": int(dead.stdout), "host": socket.gethostname(), "command": "smora train"}
    path.write_text(json.dumps(record))
    with DirectoryLock(target, "train"):  # a dead pid on this host: stale, taken over
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text(json.dumps({**record, "pid": os.getppid()}))  # alive
    with pytest.raises(DirectoryLocked, match=f"pid {os.getppid()} .*if that process is gone"):
        with DirectoryLock(target, "train"):
            pass
    path.write_text(json.dumps({**record, "host": "another-node"}))  # cannot be checked
    with pytest.raises(DirectoryLocked, match=f"another-node.*delete {path}"):
        with DirectoryLock(target, "train"):
            pass
    assert path.is_file()  # a lock that is not ours is never removed
    monkeypatch.setattr(lock_module, "_UNREADABLE_GRACE_S", 0.0)
    path.write_text("")  # a writer killed before it wrote its record
    with DirectoryLock(target, "train"):
        pass


def test_a_lock_file_that_cannot_be_created_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with (
        pytest.raises(UserInputError, match="cannot create"),
        DirectoryLock(tmp_path / "file" / "run", "train"),
    ):
        pass
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_replaced_run_comes_back_when_the_new_one_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "resolved_recipe.yaml").write_text("old: run\n")
    with pytest.raises(UserInputError, match="bad data"), claimed_run_dir(run_dir):
        apply_run_dir_action(run_dir, "replace")
        assert not any(run_dir.iterdir())
        raise UserInputError("bad data")  # found while loading, before anything is written
    assert (run_dir / "resolved_recipe.yaml").read_text() == "old: run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    with claimed_run_dir(run_dir):  # this time the new run writes: the old one goes
        apply_run_dir_action(run_dir, "replace")
        (run_dir / "resolved_recipe.yaml").write_text("new: run\n")
    assert (run_dir / "resolved_recipe.yaml").read_text() == "new: run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_directory_created_and_left_empty_is_removed(tmp_path):
    run_dir = tmp_path / "runs" / "new"
    with pytest.raises(UserInputError), claimed_run_dir(run_dir):
        apply_run_dir_action(run_dir, "create")
        raise UserInputError("missing column")
    assert not run_dir.exists()
    run_dir.mkdir()  # a folder the user made stays, even empty
    with pytest.raises(UserInputError), claimed_run_dir(run_dir):
        raise UserInputError("missing column")
    assert run_dir.is_dir()
