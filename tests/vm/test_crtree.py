"""pyckpt/tools/crtree.c, the tree `python -m pyckpt.tools.bench criu` gives both tools,
builds what it says: TASKS tasks of 3 + FDS fds each, the first FDS/2 the
root's, inherited (the same open files in every task), the rest each task's
own, and one pipe with data in it per four fds."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import termios
from collections import Counter
from collections.abc import Iterator

import pytest

from pyckpt import pidfd_getfd
from pyckpt.syscalls import kcmp_file
from pyckpt.tools import bench
from pyckpt.tools.bench import CrTree, crtree_binary, kill_and_reap, subreaper

TASKS, FDS = 3, 102  # 102 / 2 = 51: twelve groups of four and three more


@pytest.fixture
def tree(tmp_path) -> Iterator[CrTree]:
    scratch = tmp_path / "scratch"
    scratch.write_bytes(b"x" * 64)
    subreaper(True)  # every task comes back to us to be reaped
    t = CrTree(crtree_binary(), TASKS, FDS, str(scratch))
    try:
        yield t
    finally:
        kill_and_reap(t.pids)
        subreaper(False)


def kinds(pid: int) -> Counter:
    out: Counter = Counter()
    for name in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{name}")
        if link == "/dev/null":
            out[link] += 1
        else:
            out[link.split(":")[0] if ":" in link else "file"] += 1
    return out


def buffered(pid: int, fd: int) -> int:
    """FIONREAD of a task's pipe, through a copy of its fd."""
    pidfd = os.pidfd_open(pid)
    try:
        c = pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)
    try:
        return struct.unpack("i", fcntl.ioctl(c, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(c)


def crtrees_alive() -> list[int]:
    """Tasks running crtree (or zombies of it) anywhere in the guest."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().strip() == "crtree":
                        out.append(int(name))
            except OSError:
                pass
    return out


def test_the_tree_is_what_it_says(tree: CrTree) -> None:
    pids = tree.pids
    assert len(pids) == TASKS and pids[0] == tree.root
    half = FDS // 2
    for pid in pids:
        assert sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")) == list(
            range(3 + FDS)
        )
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"  # detached
        assert os.getsid(pid) == tree.root
        # per half: 12 x (pipe, pipe, eventfd, file) + 3 files
        want = {"pipe": 48, "anon_inode": 24, "file": 30, "/dev/null": 3}
        assert kinds(pid) == Counter(want)
    root = pids[0]
    for pid in pids[1:]:
        for fd in range(3, 3 + FDS):
            # the first half is the root's own open files; the rest is not
            assert kcmp_file(root, fd, pid, fd) == (fd < 3 + half), (pid, fd)
    # every pipe has data (FIONREAD: either end), in each half of every task
    for pid in pids:
        ends = [
            fd
            for fd in range(3, 3 + FDS)
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        ]
        assert len(ends) == 48
        assert all(buffered(pid, fd) > 0 for fd in ends), pid


@pytest.mark.filterwarnings("ignore:.*EFD_SEMAPHORE:RuntimeWarning")
@pytest.mark.skipif(
    shutil.which("criu") is None, reason="criu not installed (vm/setup.sh --bench)"
)
def test_bench_criu_section_end_to_end(capsys) -> None:
    """`python -m pyckpt.tools.bench criu` at 2 x 40, two rounds: both tools
    checkpoint and restore the tree, each restored tree is checked (tasks
    alive, fds as built) before its times are printed, and the ratios of
    the medians come out."""
    bench.criu(tasks=2, sizes=(40,), rounds=2)
    out = capsys.readouterr().out
    assert "CRIU 3." in out and "failed" not in out, out
    rows = {
        line.split("|")[1].split("  ")[0].strip(): line.split()
        for line in out.splitlines()
        if "|" in line and line.rstrip().endswith("x")
    }
    assert set(rows) == {"frozen", "checkpoint, wall", "restart until the tasks run"}
    for cells in rows.values():  # pyckpt's time, criu's and their ratio
        p, c, ratio = (float(x.rstrip("sx")) for x in cells[-3:])
        # each printed to 0.01: the ratio of the unrounded times lies within
        assert p > 0 and c > 0.005
        low, high = (p - 0.005) / (c + 0.005), (p + 0.005) / (c - 0.005)
        assert low - 0.005 <= ratio <= high + 0.005, cells
    (spread,) = [ln for ln in out.splitlines() if "frozen over 2 round(s)" in ln]
    assert "pyckpt " in spread and "CRIU " in spread, spread
    assert not crtrees_alive()  # every tree killed and reaped


# 6.1 does not say whether an eventfd is a semaphore: one warning per eventfd
@pytest.mark.filterwarnings("ignore:.*EFD_SEMAPHORE:RuntimeWarning")
def test_bench_epoll_section_end_to_end(capsys) -> None:
    """`python -m pyckpt.tools.bench epoll` at 50 and 100 items: a row per size,
    each with its per-item times, and the ratio of the two."""
    bench.epoll_scale((50, 100))
    out = capsys.readouterr().out
    rows = [
        line.split() for line in out.splitlines() if line.strip()[:3] in ("50 ", "100")
    ]
    assert [r[0] for r in rows] == ["50", "100"], out
    for r in rows:
        assert all(float(x) > 0 for x in r[2:5] + r[6:]), r
    assert "per item, 100 items vs 50:" in out
