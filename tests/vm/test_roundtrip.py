"""Round trips: build a tree, checkpoint it, restart it, and compare the two
with an oracle that does not use the module (tests/vm/oracle.py).

The restarted tasks are compared at the barrier (release=False), holding
exactly their fd tables; then they are released into `sleep`, and only the
fds without close-on-exec must survive the exec.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from oracle import facts, fds_of, ppids, wait_for
from trees import Member, tree_of

import pyckpt
from pyckpt.image import Image, ImageError

SLEEP = ["sleep", "1000"]


@pytest.fixture
def tmpfile() -> Iterator[str]:
    path = f"/tmp/roundtrip-{os.getpid()}.txt"
    with open(path, "wb") as f:
        f.write(b"0123456789" * 10)
    yield path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def roundtrip(body: Callable[[Member], None], image_path: str | None = None) -> None:
    """Checkpoint the tree body builds, restart it, compare everything."""
    with tree_of(body) as pids:
        res = pyckpt.checkpoint(pids[0], output=image_path)
        image = Image.load(image_path) if image_path else res.image
        before = facts(pids)
        with pyckpt.restart(image, argv=SLEEP, release=False) as r:
            new = [r.pids[p] for p in pids]
            assert facts(new) == before
            assert ppids(new) == ppids(pids)
            # buffered data last: reading it consumes it, in both trees
            assert facts(new, data=True) == facts(pids, data=True)
            keep = {fd for fd, f in before[0].items() if not f.cloexec}
            r.release()
            # compare once sleep sleeps: between exec and that, the dynamic
            # loader and setlocale() open files on the lowest free fds (a
            # transient fd 0 failed CI)
            wait_for(lambda: _sleeping(new[0]))
            assert set(fds_of(new[0])) == keep


_NANOSLEEP = ("35", "230")  # x86-64 nanosleep, clock_nanosleep


def _sleeping(pid: int) -> bool:
    """pid is sleep(1), blocked in its nanosleep: done with loading."""
    with open(f"/proc/{pid}/comm") as f:
        if f.read().strip() != "sleep":
            return False
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split()[0] in _NANOSLEEP


def test_pipeline_with_buffered_data() -> None:
    def root(t: Member) -> None:
        r, w = os.pipe()
        os.write(w, b"in flight " * 100)
        t.fork(lambda t: os.close(w))  # the reader
        t.fork(lambda t: os.close(r))  # the writer
        _r2, w2 = os.pipe2(os.O_NONBLOCK)
        os.write(w2, b"second")
        os.close(r)
        os.close(w)

    roundtrip(root)


def test_dup_and_inherited_fds_keep_sharing(tmpfile: str) -> None:
    def root(t: Member) -> None:
        fd = os.open(tmpfile, os.O_RDWR)
        os.lseek(fd, 7, os.SEEK_SET)
        os.dup2(fd, 9)
        t.fork(lambda t: os.lseek(fd, 0, os.SEEK_CUR))  # inherits both
        os.open(tmpfile, os.O_RDONLY)  # the same file, another description

    roundtrip(root)


def test_half_closed_pipes_both_ways() -> None:
    def root(t: Member) -> None:
        _r, w = os.pipe()
        os.write(w, b"last words")
        os.close(w)  # reader left alone, data still buffered
        r2, _w2 = os.pipe()
        os.close(r2)  # writer left alone

    roundtrip(root)


def test_file_at_offset_with_o_append(tmpfile: str) -> None:
    def root(t: Member) -> None:
        a = os.open(tmpfile, os.O_WRONLY | os.O_APPEND)
        os.lseek(a, 33, os.SEEK_SET)
        b = os.open(tmpfile, os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(b, 55, os.SEEK_SET)

    roundtrip(root)


def test_eventfd_counts() -> None:
    def root(t: Member) -> None:
        os.eventfd(5)
        os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        os.eventfd(2**32 - 1)

    roundtrip(root)


def test_epoll_set_over_pipes_and_eventfds() -> None:
    def root(t: Member) -> None:
        import select

        r, w = os.pipe()
        os.write(w, b"ready")
        e = os.eventfd(3)
        idle_r, _idle_w = os.pipe()
        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        ep.register(e, select.EPOLLIN | select.EPOLLOUT)
        ep.register(idle_r, select.EPOLLIN)
        ep.register(w, select.EPOLLOUT | select.EPOLLET)
        t.keep(ep)  # its fd closes when the object is collected

    roundtrip(root)


def test_three_level_tree_through_an_image_file() -> None:
    path = f"/tmp/three-levels-{os.getpid()}.img"

    def root(t: Member) -> None:
        r, w = os.pipe()

        def middle(t: Member) -> None:
            os.close(r)
            t.fork(lambda t: os.write(w, b"from the leaf"))
            t.fork(lambda t: None)

        t.fork(middle)
        t.fork(lambda t: os.close(w))
        os.close(w)

    try:
        roundtrip(root, image_path=path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_cli_checkpoint_show_restart() -> None:
    """The pyckpt command: the image it writes decodes and restarts."""
    path = f"/tmp/cli-{os.getpid()}.img"

    def root(t: Member) -> None:
        _r, w = os.pipe()
        os.write(w, b"via the cli")
        t.fork(lambda t: os.close(w))

    cmd = [sys.executable, "-m", "pyckpt"]
    try:
        with tree_of(root) as pids:
            out = subprocess.run(
                [*cmd, "checkpoint", str(pids[0]), "-o", path],
                check=False,
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stderr
            assert "downtime" in out.stdout and "2 tasks" in out.stdout
            shown = subprocess.run(
                [*cmd, "show", path], check=False, capture_output=True, text=True
            )
            assert shown.returncode == 0, shown.stderr
            assert str(pids[1]) in shown.stdout
            dot = subprocess.run(
                [*cmd, "show", "--dot", path],
                check=False,
                capture_output=True,
                text=True,
            )
            assert dot.stdout.startswith("digraph")
            # restart: the root runs `cat` on its recorded fds, the data comes out
            rs = subprocess.run(
                [*cmd, "restart", path, "--", "sh", "-c", "exit 7"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert rs.returncode == 7, rs.stderr
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _children() -> set[int]:
    return {
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == os.getpid()
    }


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return -1


@pytest.mark.parametrize("cut", ["truncated", "checksum", "magic"])
def test_corrupt_image_restarts_nothing(cut: str) -> None:
    path = f"/tmp/corrupt-{os.getpid()}.img"

    def root(t: Member) -> None:
        _r, w = os.pipe()
        os.write(w, b"abc")

    with tree_of(root) as pids:
        data = bytearray(pyckpt.checkpoint(pids[0]).image.to_bytes())
    if cut == "truncated":
        data = data[: len(data) - 9]
    elif cut == "checksum":
        data[len(data) // 2] ^= 0x40
    else:
        data[16] ^= 1
    with open(path, "wb") as f:
        f.write(data)
    fds, kids = fds_of(os.getpid()), _children()
    try:
        with pytest.raises(ImageError):
            pyckpt.restart(path, argv=SLEEP)
    finally:
        os.unlink(path)
    assert fds_of(os.getpid()) == fds
    assert _children() == kids
