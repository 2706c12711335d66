"""Which directories named for their process a start removes: only this user's, gone.

A local socket's directory is gone when its socket refuses too; a metrics directory when
every worker that wrote there is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amperity_signal.local_socket import LOCAL_SOCKET_DIRS, PREFIX, SOCKET_NAME
from amperity_signal.workers import METRICS_DIRS


@pytest.fixture
def parent() -> Iterator[Path]:
    """A short directory (a Unix socket's path is limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ls-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


def socket_dir(parent: Path, pid: int | None, *, listening: bool) -> tuple[Path, socket.socket]:
    """A directory as ``serve`` makes it, with a socket that listens or one left behind."""
    directory = parent / (f"{PREFIX}{pid}-abc" if pid is not None else f"{PREFIX}abc123")
    directory.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(directory / SOCKET_NAME))
    if listening:
        server.listen()
    else:
        server.close()  # the file stays, as after a SIGKILL: connecting is refused
    return directory, server


def test_a_dead_services_directory_is_removed_with_its_socket(parent: Path, dead_pid: int) -> None:
    """Its process gone and its socket refusing: removed; a name without a pid is left."""
    dead, _ = socket_dir(parent, dead_pid, listening=False)
    unnamed, _ = socket_dir(parent, None, listening=False)
    assert LOCAL_SOCKET_DIRS.remove_stale(str(parent)) == 1
    assert not dead.exists() and unnamed.exists()


def test_a_directory_whose_socket_answers_is_kept_though_its_pid_is_gone(
    parent: Path, dead_pid: int
) -> None:
    """A live service in another PID namespace (its pid unknown here) keeps its directory."""
    live, server = socket_dir(parent, dead_pid, listening=True)
    with server:
        assert LOCAL_SOCKET_DIRS.remove_stale(str(parent)) == 0
    assert live.exists()


def test_a_workers_directory_is_kept_while_a_worker_socket_answers(
    parent: Path, dead_pid: int
) -> None:
    """A --workers parent killed alone leaves workers serving on worker-<n>.sock: kept."""
    directory = parent / f"{PREFIX}{dead_pid}-abc"
    directory.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as refusing:
        refusing.bind(str(directory / "worker-0.sock"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as serving:
        serving.bind(str(directory / "worker-1.sock"))
        serving.listen()
        assert LOCAL_SOCKET_DIRS.remove_stale(str(parent)) == 0
        assert directory.exists()
    assert LOCAL_SOCKET_DIRS.remove_stale(str(parent)) == 1  # the last worker gone too
    assert not directory.exists()


def test_a_running_process_keeps_its_directory_before_it_binds(parent: Path) -> None:
    """A worker between mkdtemp and the bind (no socket yet) is not swept by another."""
    starting = parent / f"{PREFIX}{os.getpid()}-abc"
    starting.mkdir(mode=0o700)
    assert LOCAL_SOCKET_DIRS.remove_stale(str(parent)) == 0
    assert starting.exists()


def metrics_dir(parent: Path, pid: int, *writers: int, tag: str = "abc") -> Path:
    """A directory as ``serve --workers`` makes it, with the files its workers write."""
    directory = parent / f"{METRICS_DIRS.prefix}{pid}-{tag}"
    directory.mkdir(mode=0o700)
    for n, writer in enumerate(writers):
        kind = ("counter", "gauge_livesum", "histogram")[n % 3]
        (directory / f"{kind}_{writer}.db").write_bytes(b"")
    return directory


def test_a_metrics_directory_is_removed_once_its_parent_and_workers_are_gone(
    parent: Path, dead_pid: int
) -> None:
    """A parent and workers killed with SIGKILL leave it; a socket directory is not touched."""
    dead = metrics_dir(parent, dead_pid, dead_pid, dead_pid)
    empty = metrics_dir(parent, dead_pid, tag="def")  # killed before its workers wrote
    other, _ = socket_dir(parent, dead_pid, listening=False)
    assert METRICS_DIRS.remove_stale(str(parent)) == 2
    assert not dead.exists() and not empty.exists() and other.exists()


def test_a_metrics_directory_is_kept_while_a_worker_writes_there(
    parent: Path, dead_pid: int
) -> None:
    """The workers of a parent killed alone serve on: their files are not removed."""
    orphaned = metrics_dir(parent, dead_pid, dead_pid, os.getpid())
    running = metrics_dir(parent, os.getpid())
    assert METRICS_DIRS.remove_stale(str(parent)) == 0
    assert orphaned.exists() and running.exists()


def test_a_zombie_is_gone(parent: Path) -> None:
    """A process killed but not yet reaped (an orphan waits on init) keeps nothing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    try:
        dead = metrics_dir(parent, child.pid, child.pid)
        assert METRICS_DIRS.remove_stale(str(parent)) == 1
        assert not dead.exists()
    finally:
        child.wait()


def test_workers_skip_their_live_events_sockets_when_the_temp_path_is_too_long(
    parent: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A long TMPDIR would fail every worker's bind: they serve, each showing its own."""
    from amperity_signal import workers

    deep = parent / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert workers.make_workers_dir(2) is None
    assert list(deep.iterdir()) == []
    assert "set TMPDIR to a shorter one" in caplog.text
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    directory = workers.make_workers_dir(2)
    assert directory is not None and Path(directory).parent == parent
