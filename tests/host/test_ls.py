"""pyckpt ls on the host: the output formats of a snapshot, and sock_diag's
unix socket peers (the module itself is tested in tests/vm/test_ls.py)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from pyckpt import cli, ls
from pyckpt.abi import FMode
from pyckpt.ls import EpollItemView, FdView, FileView, Snapshot, TaskView

CLOEXEC = 0o2000000
RW = int(FMode.READ | FMode.WRITE)


def snap() -> Snapshot:
    """Task 10 and its child 11 share fd 0 (one open file); a pipe's read end
    in 10, its write end in 11; a socket pair across them; an epoll in 10
    watching the pipe; an inotify fd; a fd the module could not read."""
    s = Snapshot(root=10)
    files = [
        FileView(1, "chr", os.O_RDWR, RW, 0, 101, "/dev/null"),
        FileView(2, "pipe", os.O_RDONLY, int(FMode.READ), 0, 102, "pipe:[77]"),
        FileView(3, "pipe", os.O_WRONLY, int(FMode.WRITE), 0, 102, "pipe:[77]"),
        FileView(4, "sock", os.O_RDWR, RW, 0, 104, "socket:[80]"),
        FileView(5, "sock", os.O_RDWR, RW, 0, 105, "socket:[81]"),
        FileView(6, "eventpoll", os.O_RDWR, RW, 0, 106, "anon_inode:[eventpoll]"),
        FileView(
            7, "inotify", os.O_RDONLY, int(FMode.READ), 0, 107, "anon_inode:inotify"
        ),
        FileView(8, "pipe", os.O_RDONLY, int(FMode.READ), 0, 108, "pipe:[90]"),
    ]
    s.files = {f.objref: f for f in files}
    t10 = TaskView(10, 1, "parent", threads=3)
    t10.fds = [
        FdView(0, "/dev/null", os.O_RDWR, 1),
        FdView(3, "pipe:[77]", CLOEXEC, 2),
        FdView(4, "socket:[80]", os.O_RDWR, 4),
        FdView(5, "anon_inode:[eventpoll]", os.O_RDWR, 6),
        FdView(6, "anon_inode:inotify", 0, 7),
        FdView(7, "pipe:[90]", 0, 8),
        FdView(9, "/gone", 0, 0, problem="closed while it was listed"),
    ]
    t11 = TaskView(11, 10, "child", files_pid=0)
    t11.fds = [
        FdView(0, "/dev/null", os.O_RDWR, 1),
        FdView(1, "pipe:[77]", os.O_WRONLY, 3),
        FdView(2, "socket:[81]", os.O_RDWR, 5),
    ]
    t12 = TaskView(12, 10, "dead", zombie=True)
    s.tasks = [t10, t11, t12]
    for t in s.tasks:
        for fd in t.fds:
            if fd.objref:
                s.files[fd.objref].holders.append((t.pid, fd.fd))
    s.epolls = {6: [EpollItemView(3, 0x1, 0xAB, 2), EpollItemView(9, 0x4, 0, 0)]}
    s.socket_peers = {104: 105, 105: 104}
    s.notes = ["a note"]
    return s


def test_derived_sharing() -> None:
    s = snap()
    assert [f.objref for f in s.shared_files()] == [1]
    assert {k: [f.objref for f in v] for k, v in s.pipes().items()} == {
        102: [2, 3],
        108: [8],
    }
    assert s.socket_pairs() == [(104, 105)]
    s.socket_peers = {104: 105}  # one-sided (the peer's end left): no pair
    assert s.socket_pairs() == []


def test_summary() -> None:
    text = ls.summary(snap())
    lines = text.splitlines()
    assert lines[0] == f"tree 10: {ls.RACE_NOTE}"
    assert "may have changed" in lines[0]
    assert "task 10 ppid 1 parent (3 threads)" in lines
    assert "task 12 ppid 10 dead (zombie)" in lines
    fd0 = next(x for x in lines if x.startswith("  fd 0   file 1 "))
    assert "[same open file as task 11 fd 0]" in fd0
    fd3 = next(x for x in lines if x.startswith("  fd 3 "))
    assert "pipe" in fd3 and "cloexec" in fd3 and "pipe inode 102 with file 3" in fd3
    fd4 = next(x for x in lines if x.startswith("  fd 4 "))
    assert "socket pair, peer file 5" in fd4
    # listed even when the module could not read it, and an unsupported kind
    assert "  fd 9   /gone (closed while it was listed)" in lines
    assert any(x.startswith("  fd 6 ") and "inotify" in x for x in lines)
    assert "  file 1 /dev/null: task 10 fd 0; task 11 fd 0" in lines
    assert "  pipe 102: r file 2 (task 10 fd 3); w file 3 (task 11 fd 1)" in lines
    assert "  pipe 108: r file 8 (task 10 fd 7) (no writer in the tree)" in lines
    assert "  104 <-> 105: file 4 (task 10 fd 4) <-> file 5 (task 11 fd 2)" in lines
    assert "    tfd 3 -> file 2 events EPOLLIN data 0xab" in lines
    assert "    tfd 9 -> not open in the tree events EPOLLOUT data 0x0" in lines
    assert lines[-1] == "  a note"


def test_json() -> None:
    d = json.loads(json.dumps(ls.to_json(snap())))
    assert d["note"] == ls.RACE_NOTE
    assert [t["pid"] for t in d["tasks"]] == [10, 11, 12]
    sh = d["sharing"]
    assert sh["open_files"] == [{"objref": 1, "holders": [[10, 0], [11, 0]]}]
    assert {"inode": 102, "ends": [2, 3]} in sh["pipes"]
    assert sh["socket_pairs"] == [{"inodes": [104, 105], "ends": [[4], [5]]}]
    assert sh["epolls"][0]["items"][0] == {
        "tfd": 3,
        "events": 1,
        "data": 0xAB,
        "target": 2,
    }
    fd9 = d["tasks"][0]["fds"][-1]
    assert fd9 == {
        "fd": 9,
        "link": "/gone",
        "flags": 0,
        "objref": 0,
        "problem": "closed while it was listed",
    }


def test_dot() -> None:
    dot = ls.to_dot(snap())
    assert dot.startswith("digraph pyckpt_ls {")
    assert "task_10 -> task_11 [style=bold];" in dot
    assert 'task_10 -> file_1 [label="fd 0"];' in dot
    assert 'task_11 -> file_1 [label="fd 0"];' in dot
    assert 'file_2 -> inode_102 [label="r"];' in dot
    assert 'file_3 -> inode_102 [label="w"];' in dot
    assert "file_4 -> file_5 [dir=both, style=dotted" in dot
    assert 'file_6 -> file_2 [style=dashed, label="tfd 3 EPOLLIN"];' in dot
    assert "fd_10_9 [shape=note" in dot and 'task_10 -> fd_10_9 [label="fd 9"];' in dot
    assert "may race" in dot
    assert dot.count("{") == dot.count("}")


def test_unix_peers_from_sock_diag() -> None:
    a, b = socket.socketpair()
    lone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            peers = ls.unix_peers()
        except OSError as e:  # pragma: no cover - a host without unix_diag
            pytest.skip(f"sock_diag for unix sockets unavailable here: {e}")
        ia, ib = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        assert peers[ia] == ib and peers[ib] == ia
        assert os.fstat(lone.fileno()).st_ino not in peers
    finally:
        a.close()
        b.close()
        lone.close()


def test_cli_parses_ls() -> None:
    args = cli.parse(["ls", "123", "--dot"])
    assert args.fn is cli.cmd_ls and args.pid == 123 and args.dot
    with pytest.raises(SystemExit):
        cli.parse(["ls", "123", "--dot", "--json"])


def test_cli_ls_bad_pid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", "0"]) == 1
    assert "invalid pid 0" in capsys.readouterr().err


def test_pid_1_refused_before_anything_is_opened() -> None:
    with pytest.raises(ls.LsError, match="refusing to list pid 1"):
        ls.snapshot(1)
