"""pyckpt ls on live trees (tests/vm/trees.py), its sharing groups checked
against the oracle that does not use the module: kcmp(KCMP_FILE) for open
file descriptions, fstat for pipe inodes, kcmp(KCMP_EPOLL_TFD) for epoll
targets, kcmp(KCMP_FILES) for fd tables, the socket pair the tree made."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from oracle import epoll_lines, fdinfo, fds_of, task_facts
from trees import Member, spawn
from vmhelpers import mod_counts

from pyckpt import Context, ls
from pyckpt.syscalls import kcmp_epoll_tfd, kcmp_file

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CLONE = 56
_CLONE_FILES = 0x400


def _tick(efd: int) -> None:
    while True:
        os.eventfd_write(efd, 1)
        time.sleep(0.005)


def _body(t: Member) -> None:
    r, w = os.pipe()
    os.write(w, b"x")
    os.dup2(r, 20)  # one open file description, two fds
    os.open("/", os.O_RDONLY)  # two descriptions of one inode
    os.open("/", os.O_RDONLY | os.O_CLOEXEC)
    sa, sb = socket.socketpair()
    t.keep(sa)
    t.keep(sb)
    ep = t.keep(select.epoll())
    ep.register(r, select.EPOLLIN)
    ep.register(sa.fileno(), select.EPOLLOUT)
    ino = _libc.inotify_init1(0)  # a kind checkpoint refuses: listed anyway
    assert ino >= 0
    efd = os.eventfd(0)
    threading.Thread(target=_tick, args=(efd,), daemon=True).start()

    def child(t: Member) -> None:
        os.close(r)  # keeps the write end, the socket's other end

    t.fork(child)
    zombie = os.fork()
    if zombie == 0:
        os._exit(5)
    twin = _libc.syscall(_SYS_CLONE, _CLONE_FILES | signal.SIGCHLD, 0, 0, 0, 0)
    if twin == 0:
        while True:
            signal.pause()
    t.report(
        role="root",
        sockets=[sa.fileno(), sb.fileno()],
        epoll=ep.fileno(),
        inotify=ino,
        eventfd=efd,
        zombie=zombie,
        twin=twin,
    )


def _count(pid: int, fd: int) -> int:
    return int(fdinfo(pid, fd)["eventfd-count"], 16)


def test_ls_against_the_oracle(
    observer: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = spawn(_body)
    try:
        rep = tree.role("root")
        root = tree.root
        pids = tree.pids()
        assert {rep["zombie"], rep["twin"]} <= set(pids) and len(pids) == 4
        mine = fds_of(os.getpid())
        counts = mod_counts(observer)
        ticks: list[int] = []
        real_task = ls._Reader.task

        def slow_task(self: ls._Reader, pid: int, ppid: int) -> None:
            if pid == root:  # the tree keeps running while it is read
                ticks.append(_count(root, rep["eventfd"]))
                time.sleep(0.3)
                ticks.append(_count(root, rep["eventfd"]))
            real_task(self, pid, ppid)

        monkeypatch.setattr(ls._Reader, "task", slow_task)
        snap = ls.snapshot(root)
        assert ticks[1] > ticks[0], "the tree was stopped while listed"
        # every copy and the context closed: nothing of ours left behind
        assert fds_of(os.getpid()) == mine
        assert mod_counts(observer) == counts

        tasks = {t.pid: t for t in snap.tasks}
        assert set(tasks) == set(pids)
        oracle = dict(zip(pids, task_facts(pids)))
        for pid, t in tasks.items():
            assert t.zombie == (oracle[pid].zombie is not None)
            assert t.threads == oracle[pid].threads
            first = pids[oracle[pid].table]
            assert t.files_pid == (0 if first == pid else first)
            assert [fd.fd for fd in t.fds] == ([] if t.zombie else fds_of(pid))
        assert tasks[rep["twin"]].files_pid == root and tasks[root].threads == 2
        fds = [(t.pid, fd) for t in snap.tasks for fd in t.fds]
        assert all(fd.objref and not fd.problem for _, fd in fds)
        holder = {(pid, fd.fd): snap.files[fd.objref] for pid, fd in fds}
        assert holder[(root, rep["inotify"])].kind == "inotify"

        # sharing of open file descriptions and of inodes, pair by pair
        for (p1, a), (p2, b) in itertools.combinations(fds, 2):
            assert (a.objref == b.objref) == kcmp_file(p1, a.fd, p2, b.fd)
            s1 = os.stat(f"/proc/{p1}/fd/{a.fd}")
            s2 = os.stat(f"/proc/{p2}/fd/{b.fd}")
            same = (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)
            fa, fb = snap.files[a.objref], snap.files[b.objref]
            assert (fa.inode == fb.inode) == same
        pipes = [g for g in snap.pipes().values() if len(g) == 2]
        assert len(pipes) == 1  # its two ends (the ready pipe is closed by now)

        # the socket pair: the inodes of the two ends the tree made
        sa, sb = rep["sockets"]
        ends = sorted((holder[(root, sa)].inode, holder[(root, sb)].inode))
        assert snap.socket_pairs() == [tuple(ends)]

        # epoll items: the oracle's fdinfo lines, each target checked by kcmp
        ep = holder[(root, rep["epoll"])]
        items = snap.epolls[ep.objref]
        assert sorted((i.tfd, i.events, i.data) for i in items) == epoll_lines(
            root, rep["epoll"]
        )
        for i in items:
            tpid, tfd = snap.files[i.target].holders[0]
            assert kcmp_epoll_tfd(tpid, tfd, root, rep["epoll"], i.tfd)

        text = ls.summary(snap)
        assert "may have changed while it was read" in text
        assert f"task {rep['zombie']} ppid {root}" in text and "(zombie)" in text
    finally:
        tree.kill()


def test_ls_cli_json_and_dot() -> None:
    tree = spawn(_body)
    try:
        root = tree.root
        out = subprocess.run(
            [sys.executable, "-m", "pyckpt", "ls", str(root), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        d = json.loads(out)
        assert "not frozen" in d["note"]
        dup = [g for g in d["sharing"]["open_files"] if [root, 20] in g["holders"]]
        (group,) = dup
        assert any(kcmp_file(root, 20, p, f) for p, f in group["holders"] if f != 20)
        dot = subprocess.run(
            [sys.executable, "-m", "pyckpt", "ls", str(root), "--dot"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert dot.startswith("digraph pyckpt_ls {") and "style=dashed" in dot
        bad = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
            [sys.executable, "-m", "pyckpt", "ls", "999999999"],
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 1 and "no process with pid 999999999" in bad.stderr
    finally:
        tree.kill()
