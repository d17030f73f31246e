"""pyckpt.checkpointer: freeze a live tree, collect its files, thaw it.

Each test forks its own tree (tests/vm/trees.py), checkpoints it and checks
the in-memory image against what the members reported; the tree is killed
and reaped at teardown, and no test may leave an fd open in this process.
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trees
from trees import Member, Tree
from vmhelpers import delta, mod_counts

from pyckpt import Context, FileKind, FMode, checkpointer, freeze, pidfd_getfd
from pyckpt.checkpointer import CheckpointError, CheckpointResult, checkpoint
from pyckpt.image import Fd, File, Image, Task
from pyckpt.kinds.epoll import epolls
from pyckpt.kinds.pipe import PipeKind, pipes
from pyckpt.syscalls import epoll_add

Spawn = Callable[..., Tree]
RUNNING = {psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING, psutil.STATUS_DISK_SLEEP}
# epoll_ctl(ADD) always adds these two to what was asked
ALWAYS = select.EPOLLERR | select.EPOLLHUP


# ---- fixtures and helpers -----------------------------------------------------


@pytest.fixture(autouse=True)
def no_stray_fds() -> Iterator[None]:
    # set up first, torn down last: after every tree is gone
    before = sorted(os.listdir("/proc/self/fd"))
    yield
    assert sorted(os.listdir("/proc/self/fd")) == before


def state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


def assert_running(tree: Tree) -> None:
    pids = tree.pids()
    assert pids, "the tree is gone"
    # a task we stopped would stay 'stopped' if the thaw were missed
    states = {pid: state(pid) for pid in pids}
    assert not {s for s in states.values() if s not in RUNNING}, states


def task(image: Image, pid: int) -> Task:
    (t,) = [t for t in image.tasks if t.pid == pid]
    return t


def fd_of(image: Image, pid: int, fd: int) -> Fd:
    (f,) = [f for f in task(image, pid).fds if f.fd == fd]
    return f


def file_of(image: Image, pid: int, fd: int) -> File:
    return image.files[fd_of(image, pid, fd).objref]


def sleeper(m: Member) -> None:
    """A member with no fds at all."""


# ---- pipes ----------------------------------------------------------------------------


def _payload(size: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


@pytest.mark.parametrize(
    ("size", "pipe_size"),
    [(30_000, 0), (65_536, 0), (300_000, 1 << 20)],
    ids=["some", "full", "big-pipe"],
)
def test_pipeline_data_is_saved_and_not_consumed(
    spawn: Spawn, observer: Context, size: int, pipe_size: int
) -> None:
    payload = _payload(size)

    def root(m: Member) -> None:
        r, w = os.pipe()
        if pipe_size:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, pipe_size)
        # writes of many sizes: partly filled pipe buffers, merged ones; a
        # full pipe takes one write (partly filled pages would not hold it)
        off, step = 0, 1 if size < 65536 or pipe_size else size
        while off < len(payload):
            off += os.write(w, payload[off : off + step])
            step = step * 3 % 5000 + 1

        def reader(c: Member) -> None:
            os.close(w)
            c.report(role="reader", r=r)

        m.fork(reader)
        os.close(r)
        m.report(role="writer", w=w)

    tree = spawn(root)
    rd, wr = tree.role("reader"), tree.role("writer")
    before = mod_counts(observer)
    res = checkpoint(tree.root)
    assert delta(before, mod_counts(observer)) == dict.fromkeys(before, 0)
    img = res.image
    rfile = file_of(img, rd["pid"], rd["r"])
    wfile = file_of(img, wr["pid"], wr["w"])
    assert (rfile.kind, wfile.kind) == (FileKind.PIPE, FileKind.PIPE)
    assert rfile.f_mode == FMode.READ and wfile.f_mode == FMode.WRITE
    assert rfile.pipe_objref == wfile.pipe_objref != 0
    assert rfile.objref != wfile.objref
    pipe = pipes(img)[rfile.pipe_objref]
    assert pipe.size == (pipe_size or 65536)
    assert len(pipe.data) == size and pipe.data == payload
    assert not pipe.no_reader and not pipe.no_writer
    assert (res.nr_tasks, res.nr_fds, res.nr_files) == (2, 2, 2)
    assert_running(tree)
    # the reader still finds every byte: tee consumed nothing
    pidfd = os.pidfd_open(rd["pid"])
    try:
        theirs = pidfd_getfd(pidfd, rd["r"])
    finally:
        os.close(pidfd)
    try:
        got = b""
        while len(got) < size:
            got += os.read(theirs, size - len(got))
    finally:
        os.close(theirs)
    assert got == payload


def test_many_pipes_share_the_scratch(spawn: Spawn) -> None:
    # full 64 KiB pipes (16 buffers each: a 1 MiB scratch holds 16 of them,
    # then is read out and the pipe that did not fit tee'd again), small
    # ones in between, and one larger than the scratch (which grows)
    sizes = [65_536 if i % 3 == 0 else 1 + i * 37 % 4000 for i in range(60)]
    sizes.insert(30, 1_500_000)

    def root(m: Member) -> None:
        readers = []
        for i, size in enumerate(sizes):
            r, w = os.pipe()
            if size > 65_536:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 2 << 20)
            data = bytes([i % 251]) * size
            off = 0
            while off < size:
                off += os.write(w, data[off : off + 65_536])
            readers.append(r)
        m.report(role="root", readers=readers)

    tree = spawn(root)
    readers = tree.role("root")["readers"]
    img = checkpoint(tree.root).image
    for i, (r, size) in enumerate(zip(readers, sizes, strict=True)):
        pipe = pipes(img)[file_of(img, tree.root, r).pipe_objref]
        assert pipe.data == bytes([i % 251]) * size, (i, size, len(pipe.data))
    assert_running(tree)


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_no_garbage_collection_while_frozen(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    # a collection of the old generations costs 0.1-0.3 s under TCG: it
    # waits for the end of the call (the image written too: most of what it
    # would walk is freed by then), and the caller's setting is left as it was
    seen: list[bool] = []
    collect = PipeKind.collect

    def spy(self: PipeKind, col: Any) -> None:
        seen.append(gc.isenabled())
        collect(self, col)

    monkeypatch.setattr(PipeKind, "collect", spy)
    tree = spawn(sleeper)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        res = checkpoint(tree.root, save=lambda image: seen.append(gc.isenabled()))
        after = gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]  # collecting, then saving after the thaw
    assert after == enabled
    assert [t.pid for t in res.image.tasks] == [tree.root]


def test_downtime_ends_at_the_thaw(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what runs once the tree does (the watchdog's end, the collection the
    # GC put off) is not time the tree was frozen
    done = freeze.Watchdog.done

    def slow_done(self: Any, *args: Any, **kw: Any) -> None:
        time.sleep(0.5)
        done(self, *args, **kw)

    monkeypatch.setattr(freeze.Watchdog, "done", slow_done)
    res = checkpoint(spawn(sleeper).root)
    assert res.collect_time - res.downtime >= 0.5


def test_kill_saves_the_fd_tables_first(spawn: Spawn) -> None:
    # fd tables are made of the walks once the tree runs again; with kill
    # there is no such moment: they are made before save(), or the image
    # written would list no fds (and the tree be gone)
    def root(m: Member) -> None:
        r, w = os.pipe()
        os.set_inheritable(w, True)
        os.dup2(r, 9, inheritable=False)
        m.fork(lambda c: os.close(r))
        m.report(role="root", fds=[r, w])

    tree = spawn(root)
    pids = tree.pids()
    before = {p: sorted(int(n) for n in os.listdir(f"/proc/{p}/fd")) for p in pids}
    seen: list[dict[int, list[tuple[int, bool]]]] = []

    def save(image: Image) -> None:
        seen.append({t.pid: [(d.fd, d.cloexec) for d in t.fds] for t in image.tasks})

    res = checkpoint(tree.root, kill=True, save=save)
    assert [{p: [fd for fd, _ in fds] for p, fds in seen[0].items()}] == [before]
    r, w = tree.role("root")["fds"]
    assert dict(seen[0][tree.root])[w] is False
    assert dict(seen[0][tree.root])[9] is True
    assert (
        fd_of(res.image, tree.root, 9).objref == fd_of(res.image, tree.root, r).objref
    )


def test_tables_alike_only_at_their_ends(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # three tables alike in count, first and last fd, apart in the middle:
    # kcmp tells them apart; and were kcmp to say they are one table, the
    # walks' difference refuses the checkpoint rather than writing an image
    # its reader refuses
    def root(m: Member) -> None:
        r, w = os.pipe()
        efd = os.eventfd(0)

        def child(c: Member) -> None:
            os.close(w)
            assert os.eventfd(1) == w  # the same number, another file
            c.report(role=f"child{os.getpid()}")

        m.fork(child)
        m.fork(child)
        m.report(role="root", fds=[r, w, efd])

    tree = spawn(root)
    res = checkpoint(tree.root)
    assert [t.files_pid for t in res.image.tasks] == [0, 0, 0]
    w = tree.role("root")["fds"][1]
    refs = {fd_of(res.image, t.pid, w).objref for t in res.image.tasks}
    assert len(refs) == 3
    monkeypatch.setattr(checkpointer, "kcmp_files", lambda a, b: 0)
    with pytest.raises(CheckpointError, match="share an fd table but their walks"):
        checkpoint(tree.root)
    assert_running(tree)


def test_half_closed_pipes(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        r1, w1 = os.pipe()
        os.close(r1)  # no reader anywhere
        r2, w2 = os.pipe()
        os.write(w2, b"left behind")
        os.close(w2)  # no writer anywhere
        r3, w3 = os.pipe()
        m.report(role="root", w1=w1, r2=r2, r3=r3, w3=w3)

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    only_w = pipes(img)[file_of(img, tree.root, info["w1"]).pipe_objref]
    only_r = pipes(img)[file_of(img, tree.root, info["r2"]).pipe_objref]
    both = pipes(img)[file_of(img, tree.root, info["r3"]).pipe_objref]
    assert (only_w.no_reader, only_w.no_writer) == (True, False)
    assert (only_r.no_reader, only_r.no_writer) == (False, True)
    assert (both.no_reader, both.no_writer) == (False, False)
    assert only_r.data == b"left behind"
    assert only_w.data == both.data == b""
    assert len(pipes(img)) == 3


def test_named_fifo_keeps_its_path(spawn: Spawn, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def root(m: Member) -> None:
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, b"fifo data")
        m.report(role="root", r=r, w=w)

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    rf, wf = file_of(img, tree.root, info["r"]), file_of(img, tree.root, info["w"])
    assert (rf.kind, rf.path, wf.path) == (FileKind.FIFO, str(fifo), str(fifo))
    assert rf.pipe_objref == wf.pipe_objref
    assert pipes(img)[rf.pipe_objref].data == b"fifo data"


# ---- files, fds -----------------------------------------------------------------------


def test_dup_and_inherited_fds_are_one_file(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.write_bytes(b"0123456789")

    def root(m: Member) -> None:
        a = os.open(path, os.O_RDONLY)
        b = os.dup(a)
        other = os.open(path, os.O_RDONLY)  # a second open: its own file
        os.lseek(a, 3, os.SEEK_SET)  # shared by every copy of a
        m.fork(lambda c: c.report(role="child"))
        m.report(role="root", a=a, b=b, other=other)

    tree = spawn(root)
    info, child = tree.role("root"), tree.role("child")["pid"]
    res = checkpoint(tree.root)
    img = res.image
    shared = {
        fd_of(img, pid, info[n]).objref for pid in (tree.root, child) for n in "ab"
    }
    assert len(shared) == 1
    (objref,) = shared
    other = fd_of(img, tree.root, info["other"]).objref
    assert other != objref
    assert (img.files[objref].path, img.files[objref].pos) == (str(path), 3)
    assert (img.files[other].path, img.files[other].pos) == (str(path), 0)
    assert (res.nr_tasks, res.nr_fds, res.nr_files) == (2, 6, 2)


def test_regular_file_offset_append_and_directory(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"y" * 8000)

    def root(m: Member) -> None:
        app = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(app, b"12345")
        rw = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        os.lseek(rw, 1234, os.SEEK_SET)
        d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        m.report(role="root", app=app, rw=rw, d=d)

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    app = file_of(img, tree.root, info["app"])
    rw = file_of(img, tree.root, info["rw"])
    d = file_of(img, tree.root, info["d"])
    assert (app.kind, app.path, app.pos) == (FileKind.REG, str(path), 8005)
    assert app.f_flags & os.O_APPEND
    assert app.f_flags & os.O_ACCMODE == os.O_WRONLY and app.f_mode == FMode.WRITE
    assert (rw.pos, rw.f_flags & os.O_ACCMODE) == (1234, os.O_RDWR)
    assert rw.f_flags & os.O_NONBLOCK and not rw.f_flags & os.O_APPEND
    assert rw.f_mode == FMode.READ | FMode.WRITE
    assert (d.kind, d.path) == (FileKind.DIR, str(tmp_path))
    # what restart verifies before it reopens them
    for f, p in ((app, path), (rw, path), (d, tmp_path)):
        st = os.stat(p)
        assert (f.st_dev, f.st_ino, f.st_mode) == (st.st_dev, st.st_ino, st.st_mode)
        assert (f.st_uid, f.st_gid) == (st.st_uid, st.st_gid)
    assert app.st_size == 8005


def test_cloexec_is_per_fd(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")

    def root(m: Member) -> None:
        a = os.open(path, os.O_RDONLY)  # Python's default: O_CLOEXEC
        b = os.dup2(a, 20, inheritable=True)  # same file, no cloexec
        m.report(role="root", a=a, b=b)

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    a, b = fd_of(img, tree.root, info["a"]), fd_of(img, tree.root, info["b"])
    assert (a.cloexec, b.cloexec) == (True, False)
    assert a.objref == b.objref


# ---- eventfd, epoll ------------------------------------------------------------------


def test_eventfd_count_and_flags(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        e1 = os.eventfd(7)
        e2 = os.eventfd(3, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
        os.eventfd_write(e2, 0x1_0000_0000)  # a count above 32 bits
        with open(f"/proc/self/fdinfo/{e2}") as f:
            sem_known = "eventfd-semaphore" in f.read()
        m.report(role="root", e1=e1, e2=e2, sem_known=sem_known)

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    e1, e2 = file_of(img, tree.root, info["e1"]), file_of(img, tree.root, info["e2"])
    assert (e1.kind, e1.extra.count, e1.extra.efd_flags) == (FileKind.EVENTFD, 7, 0)
    assert (e2.kind, e2.extra.count) == (FileKind.EVENTFD, 0x1_0000_0003)
    assert e2.f_flags & os.O_NONBLOCK and not e1.f_flags & os.O_NONBLOCK
    # 6.1 does not print eventfd-semaphore: then the flag cannot be known
    assert e2.extra.efd_flags == (os.EFD_SEMAPHORE if info["sem_known"] else 0)


def test_epoll_items_resolve_to_their_targets(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        r, w = os.pipe()
        e = os.eventfd(0)
        ep = m.keep(select.epoll())
        epoll_add(ep.fileno(), r, select.EPOLLIN, 0x1234)
        epoll_add(ep.fileno(), e, select.EPOLLOUT | select.EPOLLET, 0xDEADBEEFCAFE0001)
        # the item keeps the fd number it was added with
        e2 = os.dup(e)
        os.close(e)
        m.report(role="root", r=r, w=w, e=e, e2=e2, ep=ep.fileno())

    tree = spawn(root)
    info = tree.role("root")
    img = checkpoint(tree.root).image
    epf = file_of(img, tree.root, info["ep"])
    assert epf.kind == FileKind.EPOLL
    items = sorted(epolls(img)[epf.objref].items, key=lambda i: i.tfd)
    got = [(i.target, i.tfd, i.events, i.data) for i in items]
    r_obj = fd_of(img, tree.root, info["r"]).objref
    e_obj = fd_of(img, tree.root, info["e2"]).objref
    want = [
        (r_obj, info["r"], select.EPOLLIN | ALWAYS, 0x1234),
        (
            e_obj,
            info["e"],
            select.EPOLLOUT | select.EPOLLET | ALWAYS,
            0xDEADBEEFCAFE0001,
        ),
    ]
    assert got == sorted(want, key=lambda x: x[1])
    assert img.files[e_obj].kind == FileKind.EVENTFD
    assert list(epolls(img)) == [epf.objref]


# ---- the tree: structure, freezing, thawing -------------------------------------------


def test_three_level_tree_order_and_identity(spawn: Spawn) -> None:
    def grandchild(g: Member) -> None:
        trees.set_comm("ckpt-g")
        g.report(role="g")

    def child_a(c: Member) -> None:
        trees.set_comm("ckpt-a")
        os.chdir("/tmp")
        c.fork(grandchild)
        c.report(role="a")

    def child_b(c: Member) -> None:
        trees.set_comm("ckpt-b")
        os.setsid()
        c.report(role="b")

    def root(m: Member) -> None:
        trees.set_comm("ckpt-root")
        m.fork(child_a)
        m.fork(child_b)

    tree = spawn(root)
    a, b, g = (tree.role(n)["pid"] for n in ("a", "b", "g"))
    img = checkpoint(tree.root).image
    # a parent before its children, children by pid
    first, second = sorted([(a, [a, g]), (b, [b])])
    assert [t.pid for t in img.tasks] == [tree.root, *first[1], *second[1]]
    by = {t.pid: t for t in img.tasks}
    assert by[tree.root].ppid == os.getpid()
    assert (by[a].ppid, by[b].ppid, by[g].ppid) == (tree.root, tree.root, a)
    assert [by[p].comm for p in (tree.root, a, b, g)] == [
        "ckpt-root",
        "ckpt-a",
        "ckpt-b",
        "ckpt-g",
    ]
    assert (by[b].sid, by[b].pgid) == (b, b)
    assert (by[a].sid, by[a].pgid) == (os.getsid(0), os.getpgid(0))
    assert by[a].cwd == by[g].cwd == "/tmp"
    assert by[tree.root].cwd == os.getcwd()
    assert by[a].argv == psutil.Process(a).cmdline() and by[a].argv
    assert all(t.fds == [] for t in img.tasks)


def test_tree_runs_again_and_a_stopped_task_stays_stopped(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        m.fork(lambda c: c.report(role="stopped"))
        m.fork(lambda c: c.report(role="running"))

    tree = spawn(root)
    stopped, running = tree.role("stopped")["pid"], tree.role("running")["pid"]
    os.kill(stopped, 19)  # SIGSTOP, before the checkpoint came
    deadline = time.monotonic() + 5
    while state(stopped) != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.01)
    res = checkpoint(tree.root)
    assert res.nr_tasks == 3
    assert 0 < res.downtime <= res.collect_time
    assert state(stopped) == psutil.STATUS_STOPPED
    assert state(running) in RUNNING and state(tree.root) in RUNNING
    assert res.image.head.time <= time.time()
    assert res.image.head.release == os.uname().release


def _cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read()


def _our_cgroups() -> list[str]:
    return [n for n in os.listdir("/sys/fs/cgroup") if n.startswith("pyckpt-")]


def test_cgroup_freezer(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        r, w = os.pipe()
        os.write(w, b"through the cgroup freezer")
        m.fork(lambda c: c.report(role="child"))
        m.report(role="root", r=r)

    tree = spawn(root)
    pids = tree.pids()
    groups = {pid: _cgroup(pid) for pid in pids}
    res = checkpoint(tree.root, freezer="cgroup")
    img = res.image
    pipe = pipes(img)[file_of(img, tree.root, tree.role("root")["r"]).pipe_objref]
    assert pipe.data == b"through the cgroup freezer"
    assert res.nr_tasks == 2
    assert _our_cgroups() == []
    assert {pid: _cgroup(pid) for pid in pids} == groups
    assert_running(tree)


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_kill_leaves_no_task(spawn: Spawn, freezer: str) -> None:
    def root(m: Member) -> None:
        m.fork(lambda c: c.fork(sleeper))

    tree = spawn(root)
    pids = tree.pids()
    assert len(pids) == 3
    res = checkpoint(tree.root, freezer=freezer, kill=True)
    assert [t.pid for t in res.image.tasks] == pids
    # dead: at most a zombie waiting for its parent (the test) to reap it
    assert {state(pid) for pid in pids} <= {psutil.STATUS_ZOMBIE, "gone"}
    assert _our_cgroups() == []


# ---- refusals and errors ----------------------------------------------------------------


def test_refuses_pid_1_ourselves_and_missing_pids() -> None:
    with pytest.raises(CheckpointError, match="pid 1"):
        checkpoint(1)
    with pytest.raises(CheckpointError, match="calling process"):
        checkpoint(os.getpid())
    with pytest.raises(CheckpointError, match="calling process|ancestor"):
        checkpoint(os.getppid())
    with pytest.raises(CheckpointError, match="no process with pid"):
        checkpoint(1 << 30)
    with pytest.raises(CheckpointError, match="invalid pid"):
        checkpoint(0)


def test_threads_stop_with_their_process_and_a_thread_is_no_root(
    spawn: Spawn,
) -> None:
    def root(m: Member) -> None:
        ready = threading.Event()
        t = threading.Thread(target=lambda: (ready.set(), time.sleep(1e6)))
        t.daemon = True
        t.start()
        ready.wait()
        m.report(role="root", tid=t.native_id)

    tree = spawn(root)
    tid = tree.role("root")["tid"]
    with pytest.raises(CheckpointError, match=f"thread of process {tree.root}"):
        checkpoint(tid)
    res = checkpoint(tree.root)
    assert [t.pid for t in res.image.tasks] == [tree.root]
    assert_running(tree)


def test_unknown_freezer_is_a_value_error(spawn: Spawn) -> None:
    tree = spawn(sleeper)
    with pytest.raises(ValueError, match="freezer"):
        checkpoint(tree.root, freezer="ptrace")
    assert_running(tree)


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_socket_and_device_are_reported_together(spawn: Spawn, freezer: str) -> None:
    def root(m: Member) -> None:
        # UDP: unix sockets within the tree are saved (kinds/unix.py)
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sa, sb = a.detach(), b.detach()
        # a device that is no terminal, above fds 0-2 (/dev/null is saved)
        low = os.open("/dev/kmsg", os.O_WRONLY)
        null = fcntl.fcntl(low, fcntl.F_DUPFD, 10)
        os.close(low)
        m.fork(lambda c: c.report(role="child", sb=sb))
        os.close(sb)
        m.report(role="root", sa=sa, null=null)

    tree = spawn(root)
    info, child = tree.role("root"), tree.role("child")
    groups = {pid: _cgroup(pid) for pid in tree.pids()}
    with pytest.raises(CheckpointError) as e:
        checkpoint(tree.root, freezer=freezer)
    problems = e.value.problems
    assert len(problems) == 3, str(e.value)
    # one line each, tree order: the root's fds, then the child's new one
    assert f"task {tree.root} " in problems[0] and f"fd {info['sa']}:" in problems[0]
    assert "UDP (AF_INET) socket" in problems[0]
    assert (
        f"fd {info['null']}: tty: character device /dev/kmsg (rdev 1:11): not a "
        "terminal" in problems[1]
    )
    assert f"task {child['pid']} " in problems[2]
    assert "UDP (AF_INET) socket" in problems[2]
    assert f"fd {child['sb']}:" in problems[2]
    assert_running(tree)
    assert _our_cgroups() == []
    assert {pid: _cgroup(pid) for pid in tree.pids()} == groups


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_zombie_in_the_tree_is_saved(spawn: Spawn, freezer: str) -> None:
    def root(m: Member) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(4)  # never reaped: a zombie child of the root
        m.report(role="root", zombie=pid)

    tree = spawn(root)
    zombie = tree.role("root")["zombie"]
    deadline = time.monotonic() + 5
    while state(zombie) != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    res = checkpoint(tree.root, freezer=freezer)
    (saved,) = [t for t in res.image.tasks if t.pid == zombie]
    assert saved.exit_status == 4 << 8 and saved.ppid == tree.root
    # neither frozen nor reaped by the checkpoint; the freezer undone
    assert state(zombie) == psutil.STATUS_ZOMBIE
    assert state(tree.root) in RUNNING
    assert _our_cgroups() == []


def test_deleted_file_saved_or_refused_over_the_limit(
    spawn: Spawn, tmp_path: Path
) -> None:
    """A deleted file's contents go into the image (issue 10); above the
    limit the checkpoint is refused naming fd, path and size."""
    from pyckpt.checkpointer import Options
    from pyckpt.kinds.memfd import Contents

    path = tmp_path / "gone"
    path.write_bytes(b"data")

    def root(m: Member) -> None:
        fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
        m.report(role="root", fd=fd)

    tree = spawn(root)
    fd = tree.role("root")["fd"]
    with pytest.raises(CheckpointError, match="deleted") as e:
        checkpoint(tree.root, options=Options(contents_limit=3))
    assert str(path) in str(e.value) and "4 bytes" in str(e.value)
    assert f"fd {fd}" in str(e.value)
    assert_running(tree)
    image = checkpoint(tree.root).image
    (f,) = [image.files[x.objref] for x in image.tasks[0].fds if x.fd == fd]
    assert f.kind == FileKind.DELETED and f.path == str(path)
    assert isinstance(f.extra, Contents) and f.extra.data == b"data"
    assert_running(tree)


def test_overmounted_file_is_unreachable(spawn: Spawn, tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "hidden"
    path.write_bytes(b"old")

    def root(m: Member) -> None:
        m.report(role="root", fd=os.open(path, os.O_RDONLY))

    tree = spawn(root)
    # the tree's file keeps its path, which now leads into another filesystem
    subprocess.run(["mount", "-t", "tmpfs", "none", str(sub)], check=True)
    try:
        path.write_bytes(b"new")
        with pytest.raises(CheckpointError, match="not reachable") as e:
            checkpoint(tree.root)
        assert f"{path}: not reachable" in str(e.value)
        assert_running(tree)
    finally:
        subprocess.run(["umount", str(sub)], check=True)


def test_pipe_end_outside_the_tree_is_a_leak(spawn: Spawn) -> None:
    r, w = os.pipe()
    try:
        tree = spawn(lambda m: None, pass_fds=(r,))
    finally:
        os.close(r)
    try:
        os.write(w, b"from outside")
        with pytest.raises(CheckpointError, match="held 2 times") as e:
            checkpoint(tree.root)
        assert e.value.errno == 16  # EBUSY
        text = str(e.value)
        assert "pipe:[objref" in text
        assert f"task {tree.root} " in text and f"fd {r}" in text
        assert "the tree accounts for 1" in text
        assert_running(tree)

        res = checkpoint(tree.root, allow_external=True)
        f = file_of(res.image, tree.root, r)
        assert f.external
        assert pipes(res.image)[f.pipe_objref].data == b"from outside"
        (note,) = res.image.errors
        assert note.err == 0 and note.msg.startswith("external: ")
        assert note.objref == f.pipe_objref and (note.pid, note.fd) == (tree.root, r)
        assert_running(tree)
    finally:
        os.close(w)


def test_open_file_shared_with_outside_is_a_leak(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        tree = spawn(lambda m: None, pass_fds=(fd,))
        with pytest.raises(CheckpointError) as e:
            checkpoint(tree.root)
        text = str(e.value)
        assert str(path) in text and f"fd {fd}" in text
        assert "held 2 times, the tree accounts for 1" in text
        res = checkpoint(tree.root, allow_external=True)
        assert file_of(res.image, tree.root, fd).external
    finally:
        os.close(fd)
    assert_running(tree)


def test_epoll_target_only_in_the_epoll_set_is_a_checkpoint_leak(
    spawn: Spawn,
) -> None:
    efd = os.eventfd(0)  # the test keeps it: the tree only has the epoll item

    def root(m: Member) -> None:
        ep = m.keep(select.epoll())
        epoll_add(ep.fileno(), efd, select.EPOLLIN, 7)
        os.close(efd)
        m.report(role="root", ep=ep.fileno())

    try:
        tree = spawn(root, pass_fds=(efd,))
        for allow in (False, True):  # external or not, the item cannot be saved
            with pytest.raises(CheckpointError, match="checkpoint leak") as e:
                checkpoint(tree.root, allow_external=allow)
            text = str(e.value)
            assert f"(original fd {efd})" in text
            assert f"fd {tree.role('root')['ep']}" in text
            assert f"held outside by pid {os.getpid()}" in text
            assert "anon_inode:[eventfd]" in text
            assert_running(tree)
    finally:
        os.close(efd)


def test_result_counts(spawn: Spawn) -> None:
    def root(m: Member) -> None:
        r, _w = os.pipe()
        os.dup(r)
        m.fork(sleeper)

    tree = spawn(root)
    res = checkpoint(tree.root)
    assert isinstance(res, CheckpointResult)
    assert (res.nr_tasks, res.nr_fds, res.nr_files) == (2, 6, 2)
    assert len(pipes(res.image)) == 1
