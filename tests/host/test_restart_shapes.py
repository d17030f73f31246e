"""Restart's checks of task shapes, before anything is created (host: no
module needed): zombies, shared fd tables, threads."""

from __future__ import annotations

import copy
import signal

import pytest

from pyckpt.abi import FileKind, FMode
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.restarter import _check

RW = FMode.READ | FMode.WRITE


def shapes_image() -> Image:
    """Root 100 (4 threads), children 101 and 103 with tables of their own,
    104 sharing the root's (CLONE_FILES), 105 a zombie child of the root."""
    files = [File(i, FileKind.EVENTFD, 2, RW, extra=Eventfd(i)) for i in (1, 2, 3)]

    def task(pid: int, ppid: int, fds: list[Fd], **kw: object) -> Task:
        return Task(pid, ppid, 100, 100, f"t{pid}", [f"t{pid}"], "/", fds, **kw)

    tasks = [
        task(100, 1, [Fd(0, 1), Fd(1, 2, cloexec=True)], nr_threads=4),
        task(101, 100, [Fd(0, 1)]),
        task(102, 101, [Fd(5, 3)]),
        task(103, 100, []),
        task(104, 100, [Fd(0, 1), Fd(1, 2, cloexec=True)], files_pid=100),
        Task(105, 100, 100, 100, "dead", [], "", exit_status=3 << 8),
    ]
    return Image(
        head=Head(0.0, "Linux", "r", "v", "x86_64"),
        tasks=tasks,
        files={f.objref: f for f in files},
    )


def plan_of(img: Image) -> list[str]:
    return _check(img, None).warnings


def test_shapes_accepted_with_warnings() -> None:
    notes = plan_of(shapes_image())
    assert any("task 100 had 4 threads" in n and "not recreated" in n for n in notes)
    assert any(
        "task 104 shared the fd table of task 100" in n and "execve(2) unshares" in n
        for n in notes
    )


def test_zombie_needs_no_argv_but_a_live_task_does() -> None:
    img = shapes_image()
    assert img.tasks[-1].argv == []
    _check(img, None)  # the zombie (no argv) is fine
    img.tasks[3].argv = []
    with pytest.raises(RestartError, match="task 103: no argv"):
        _check(img, None)


@pytest.mark.parametrize(
    ("status", "match"),
    [
        (0x10000, "is no exit status"),
        (0x0101, "is no exit status"),  # a code and a signal at once
        (0x7F, "does not end a process"),  # stopped, not exited
        (int(signal.SIGCHLD), "signal 17 does not end a process"),
        (int(signal.SIGSTOP), "does not end a process"),
    ],
)
def test_bad_zombie_status_refused(status: int, match: str) -> None:
    img = shapes_image()
    img.tasks[-1].exit_status = status
    with pytest.raises(RestartError, match=match):
        _check(img, None)


def test_good_zombie_statuses() -> None:
    for status in (0, 255 << 8, int(signal.SIGKILL), int(signal.SIGSEGV) | 0x80, 34):
        img = shapes_image()
        img.tasks[-1].exit_status = status
        notes = _check(img, None).warnings
        assert any("without a core" in n for n in notes) == bool(status & 0x80)


def test_zombie_shapes_refused() -> None:
    img = shapes_image()
    img.tasks[0].exit_status = 0
    with pytest.raises(RestartError, match="the tree's root is a zombie"):
        _check(img, None)
    img = shapes_image()
    child = copy.deepcopy(img.tasks[3])
    child.pid, child.ppid = 106, 105
    img.tasks.append(child)
    with pytest.raises(RestartError, match="its parent 105 is a zombie"):
        _check(img, None)
    img = shapes_image()
    img.tasks[-1].fds = copy.deepcopy(img.tasks[1].fds)
    with pytest.raises(RestartError, match="a zombie with an fd table"):
        _check(img, None)


def test_shared_table_refused_unless_identical() -> None:
    img = shapes_image()
    img.tasks[4].fds = img.tasks[4].fds[:-1]
    with pytest.raises(RestartError, match="lists other fds"):
        _check(img, None)
    img = shapes_image()
    img.tasks[4].files_pid = 105  # the zombie, and a later task
    with pytest.raises(RestartError, match="not an earlier live task"):
        _check(img, None)
