"""pyckpt.restarter: images built by hand, restarted, checked without the module.

The oracle is the kernel's own view: /proc/PID/fd and fdinfo, /proc/PID/stat,
kcmp(KCMP_FILE) and kcmp(KCMP_EPOLL_TFD) (syscalls, not /dev/ckpt), and what
the restarted programs themselves see once released (they write JSON into a
file under a per-test directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import resource
import select
import signal
import stat
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from vmhelpers import delta, mod_counts

from pyckpt import Context, FileKind, FMode, Policy
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds.epoll import Epoll, EpollItem
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.kinds.pipe import Pipe, PipeKind, pipes
from pyckpt.restarter import Restarted, RestartError, restart
from pyckpt.syscalls import kcmp_epoll_tfd, kcmp_file, pidfd_getfd

O_CLOEXEC = 0o2000000
READ, WRITE = FMode.READ, FMode.WRITE
WAIT = 60.0  # a Python start under TCG takes seconds


# ---- building images ----------------------------------------------------------


_TYPE = {
    FileKind.REG: stat.S_IFREG,
    FileKind.DIR: stat.S_IFDIR,
    FileKind.FIFO: stat.S_IFIFO,
}


def identify(f: File) -> File:
    """Fill what a checkpoint records of a file reopened by path (its type
    alone when the path does not exist)."""
    if f.kind in _TYPE and not f.st_mode:
        try:
            st = os.stat(f.path)
        except FileNotFoundError:
            f.st_mode = _TYPE[f.kind] | 0o644
        else:
            f.st_dev, f.st_ino, f.st_mode = st.st_dev, st.st_ino, st.st_mode
            f.st_uid, f.st_gid, f.st_size = st.st_uid, st.st_gid, st.st_size
    return f


def image(tasks: list[Task], files: list[File], pipes=(), epolls=()) -> Image:
    files = [identify(f) for f in files]
    u = os.uname()
    return Image(
        head=Head(
            time=time.time(),
            sysname=u.sysname,
            release=u.release,
            version=u.version,
            machine=u.machine,
        ),
        tasks=tasks,
        files={f.objref: f for f in files},
        extra={
            "pipe": {p.objref: p for p in pipes},
            "epoll": {e.objref: e for e in epolls},
        },
    )


def task(pid: int, ppid: int, fds: list[Fd], *, sid: int = 0, pgid: int = 0, **kw):
    kw.setdefault("cwd", "/")
    kw.setdefault("argv", ["/bin/true"])
    return Task(
        pid=pid, ppid=ppid, sid=sid or pid, pgid=pgid or pid, comm="t", fds=fds, **kw
    )


def pipe_end(objref: int, pipe: int, mode: FMode, flags: int = 0) -> File:
    acc = os.O_RDONLY if mode == READ else os.O_WRONLY
    return File(objref, FileKind.PIPE, acc | flags, mode, pipe_objref=pipe)


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


# ---- the oracle -----------------------------------------------------------------


def fd_numbers(pid: int | str) -> list[int]:
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def fdinfo(pid: int, fd: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def fd_flags(pid: int, fd: int) -> int:
    return int(fdinfo(pid, fd)["flags"], 8)


def proc_stat(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return {"ppid": int(fields[1]), "pgrp": int(fields[2]), "session": int(fields[3])}


def my_fds() -> dict[int, str]:
    out = {}
    for n in fd_numbers("self"):
        with contextlib.suppress(OSError):
            out[n] = os.readlink(f"/proc/self/fd/{n}")
    return out


def forks_of_me() -> list[int]:
    """Live processes that are copies of this one (stubs never exec'd)."""
    me = Path("/proc/self/cmdline").read_bytes()
    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(OSError, psutil.Error):
            if Path(f"/proc/{p.pid}/cmdline").read_bytes() == me:
                found.append(p.pid)
    return found


def wait_for(path: Path, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def results(path: Path, timeout: float = WAIT) -> dict:
    """The JSON a restarted task wrote: the file appears when the task opens
    it, before the task has written it, so wait until it parses."""
    deadline = time.monotonic() + timeout
    wait_for(path, timeout)
    while True:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            assert time.monotonic() < deadline, f"{path} never held JSON"
            time.sleep(0.02)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def clean(observer: Context) -> Iterator[None]:
    """No stub, no context and no hash entry left behind by the test."""
    before_fds = my_fds()
    before = mod_counts(observer)
    yield
    assert forks_of_me() == []
    d = delta(before, mod_counts(observer))
    assert (d["mod_contexts"], d["mod_objs"]) == (0, 0), d
    leaked = {n: t for n, t in my_fds().items() if before_fds.get(n) != t}
    assert not leaked, f"coordinator fds left: {leaked}"


@pytest.fixture
def restarted(clean: None) -> Iterator[list[Restarted]]:
    """Restarts made by a test: killed and torn down whatever happens, before
    clean checks that nothing is left."""
    made: list[Restarted] = []
    yield made
    for r in made:
        r.kill()


def start(made: list[Restarted], img: Image, **kw) -> Restarted:
    r = restart(img, release=False, **kw)
    made.append(r)
    return r


def assert_coordinator_holds_nothing(r: Restarted, before: dict[int, str]) -> None:
    """The test process has only the context and pidfds more: no restored object."""
    new = {n: t for n, t in my_fds().items() if before.get(n) != t}
    assert sorted(new.values()) == sorted(
        ["/dev/ckpt"] + ["anon_inode:[pidfd]"] * len(r.pids)
    ), new


# ---- restored state ----------------------------------------------------------------

PIPE_READER = """
import json, os, sys
os.set_blocking(3, False)
got = os.read(3, 100)
os.write(4, b" more")
more = os.read(3, 100)
os.close(4)
eof = os.read(3, 100)
json.dump({"got": got.decode(), "more": more.decode(), "eof": eof.decode()},
          open(sys.argv[1] + ".tmp", "w"))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


def test_pipe_data_read_back(restarted, out: Path) -> None:
    img = image(
        [task(100, 1, [Fd(3, 1), Fd(4, 2, cloexec=True)])],
        [pipe_end(1, 10, READ), pipe_end(2, 10, WRITE)],
        pipes=[Pipe(10, size=65536, data=b"hello")],
    )
    before = my_fds()
    res = out / "res.json"
    r = start(restarted, img, argv=python(PIPE_READER, str(res)))
    pid = r.pids[100]
    assert fd_numbers(pid) == [3, 4]
    assert not fd_flags(pid, 3) & O_CLOEXEC and fd_flags(pid, 4) & O_CLOEXEC
    ends = [os.stat(f"/proc/{pid}/fd/{n}") for n in (3, 4)]
    assert stat.S_ISFIFO(ends[0].st_mode) and ends[0].st_ino == ends[1].st_ino
    assert fd_flags(pid, 3) & os.O_ACCMODE == os.O_RDONLY
    assert fd_flags(pid, 4) & os.O_ACCMODE == os.O_WRONLY
    assert_coordinator_holds_nothing(r, before)
    r.release()
    # fd 4 is close-on-exec: the program's write to it fails
    assert r.wait(WAIT) == {100: 1}


def test_no_garbage_collection_while_restarting(
    restarted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the tasks wait on the coordinator: no collection meanwhile, and the
    # caller's setting is left as it was
    seen: list[bool] = []
    make = PipeKind.restore

    def spy(self: PipeKind, *args: object) -> None:
        seen.append(gc.isenabled())
        make(self, *args)

    monkeypatch.setattr(PipeKind, "restore", spy)
    img = image(
        [task(100, 1, [Fd(3, 1), Fd(4, 2)])],
        [pipe_end(1, 10, READ), pipe_end(2, 10, WRITE)],
        pipes=[Pipe(10, size=65536, data=b"x")],
    )
    assert gc.isenabled()
    start(restarted, img, argv=["/bin/true"])
    assert seen == [False] and gc.isenabled()


def test_pipe_data_read_back_both_ends(restarted, out: Path) -> None:
    img = image(
        [task(100, 1, [Fd(3, 1), Fd(4, 2)])],
        [pipe_end(1, 10, READ), pipe_end(2, 10, WRITE)],
        pipes=[Pipe(10, size=65536, data=b"hello")],
    )
    res = out / "res.json"
    r = start(restarted, img, argv=python(PIPE_READER, str(res)))
    r.release()
    assert r.wait(WAIT) == {100: 0}
    assert results(res) == {"got": "hello", "more": " more", "eof": ""}


def test_fifo_and_two_descriptions_of_one_end(restarted, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rd, wr = os.O_RDONLY, os.O_WRONLY
    files = [
        File(
            1, FileKind.FIFO, rd | os.O_NONBLOCK, READ, path=str(fifo), pipe_objref=10
        ),
        File(2, FileKind.FIFO, wr, WRITE, path=str(fifo), pipe_objref=10),
        pipe_end(3, 20, READ),
        pipe_end(4, 20, WRITE, os.O_NONBLOCK),
        pipe_end(5, 20, READ, os.O_NONBLOCK),  # a second open of the read end
        pipe_end(6, 20, WRITE),  # and of the write end, blocking
    ]
    pipes = [Pipe(10, 4096, data=b"fifo"), Pipe(20, 8192, data=b"anon")]
    fds = [Fd(3, 1), Fd(4, 2), Fd(5, 3), Fd(6, 4), Fd(7, 5), Fd(8, 6)]
    res = tmp_path / "res.json"
    r = start(
        restarted,
        image([task(100, 1, fds)], files, pipes=pipes),
        argv=python(PIPE_READER, str(res)),
    )
    pid = r.pids[100]
    # every File, and each pipe's holder of "the other end"
    assert r.context.stats().nr_objs == len(files) + len(pipes)
    st = {n: os.stat(f"/proc/{pid}/fd/{n}") for n in (3, 4, 5, 6, 7)}
    assert st[3].st_ino == st[4].st_ino == fifo.stat().st_ino
    assert st[5].st_ino == st[6].st_ino == st[7].st_ino
    assert kcmp_file(pid, 5, pid, 5) and not kcmp_file(pid, 5, pid, 7)
    assert fd_flags(pid, 7) & os.O_NONBLOCK and not fd_flags(pid, 5) & os.O_NONBLOCK
    assert fd_flags(pid, 3) & os.O_NONBLOCK and not fd_flags(pid, 4) & os.O_NONBLOCK
    assert fd_flags(pid, 6) & os.O_NONBLOCK and not fd_flags(pid, 8) & os.O_NONBLOCK
    assert not kcmp_file(pid, 6, pid, 8)
    copy = pidfd_getfd(r._procs.pidfds[100], 6)
    size = fcntl.fcntl(copy, fcntl.F_GETPIPE_SZ)
    os.close(copy)
    assert size == 8192
    r.release()
    assert r.wait(WAIT) == {100: 0}
    assert results(res) == {"got": "fifo", "more": " more", "eof": ""}


LIST_FDS = """
import json, os, sys
def is_open(fd):
    try:
        return os.fstat(fd) is not None
    except OSError:
        return False
# the listing's own fd is closed by the time is_open runs
fds = sorted(n for n in map(int, os.listdir("/proc/self/fd")) if is_open(n))
os.write(7, b"Z")  # the O_APPEND file: lands at its end
path = sys.argv[1] + "." + str(os.getpid())
json.dump({"fds": fds, "pos3": os.lseek(3, 0, os.SEEK_CUR)}, open(path, "w"))
"""


def test_shared_files_offsets_and_cloexec(restarted, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"0123456789abcdef")
    log = tmp_path / "log"
    log.write_bytes(b"0123456789")
    rdwr = os.O_RDWR
    files = [
        File(1, FileKind.REG, rdwr, READ | WRITE, pos=5, path=str(data)),
        File(2, FileKind.REG, os.O_RDONLY, READ, pos=0, path=str(data)),
        File(3, FileKind.REG, os.O_WRONLY | os.O_APPEND, WRITE, pos=4, path=str(log)),
        File(4, FileKind.DIR, os.O_RDONLY | os.O_DIRECTORY, READ, path=str(tmp_path)),
    ]
    # 3 and 5 share one description (dup); 6 is a second open of the same
    # file; the child inherited 3 and 7
    parent = task(100, 1, [Fd(3, 1), Fd(5, 1, cloexec=True), Fd(6, 2), Fd(7, 3)])
    child = task(101, 100, [Fd(3, 1), Fd(7, 3), Fd(9, 4, cloexec=True)])
    res = str(tmp_path / "res")
    before = my_fds()
    r = start(restarted, image([parent, child], files), argv=python(LIST_FDS, res))
    p, c = r.pids[100], r.pids[101]
    assert (fd_numbers(p), fd_numbers(c)) == ([3, 5, 6, 7], [3, 7, 9])
    assert kcmp_file(p, 3, p, 5) and kcmp_file(p, 3, c, 3)
    assert kcmp_file(p, 7, c, 7)
    assert not kcmp_file(p, 3, p, 6)
    assert os.stat(f"/proc/{p}/fd/6").st_ino == data.stat().st_ino
    assert os.stat(f"/proc/{c}/fd/9").st_ino == tmp_path.stat().st_ino
    assert [int(fdinfo(p, n)["pos"]) for n in (3, 5, 6, 7)] == [5, 5, 0, 4]
    assert int(fdinfo(c, 3)["pos"]) == 5
    assert fd_flags(p, 7) & os.O_APPEND and fd_flags(p, 7) & os.O_ACCMODE == 1
    cloexec = {n: bool(fd_flags(p, n) & O_CLOEXEC) for n in (3, 5, 6, 7)}
    assert cloexec == {3: False, 5: True, 6: False, 7: False}
    assert fd_flags(c, 9) & O_CLOEXEC and not fd_flags(c, 3) & O_CLOEXEC
    assert_coordinator_holds_nothing(r, before)

    # one offset: moved through a copy of the parent's fd 3, seen everywhere
    copy = pidfd_getfd(r._procs.pidfds[100], 3)
    os.lseek(copy, 9, os.SEEK_SET)
    os.close(copy)
    assert [int(fdinfo(pid, 3)["pos"]) for pid in (p, c)] == [9, 9]
    assert int(fdinfo(p, 5)["pos"]) == 9 and int(fdinfo(p, 6)["pos"]) == 0

    r.release()
    assert r.wait(WAIT) == {100: 0}
    for pid, fds in ((p, [3, 6, 7]), (c, [3, 7])):  # close-on-exec ones gone
        got = results(Path(f"{res}.{pid}"))
        assert got == {"fds": fds, "pos3": 9}
    assert log.read_bytes() == b"0123456789ZZ"


def test_eventfd_count(restarted, out: Path) -> None:
    code = """
    import json, os, sys
    a = int.from_bytes(os.read(3, 8), "little")
    try:
        os.read(3, 8)
        b = "data"
    except BlockingIOError:
        b = "eagain"
    s = [int.from_bytes(os.read(4, 8), "little") for _ in range(2)]
    json.dump([a, b, s], open(sys.argv[1], "w"))
    """
    files = [
        File(
            1,
            FileKind.EVENTFD,
            os.O_RDWR | os.O_NONBLOCK,
            READ | WRITE,
            extra=Eventfd(7),
        ),
        File(2, FileKind.EVENTFD, os.O_RDWR, READ | WRITE, extra=Eventfd(3, 1)),
    ]
    res = out / "res.json"
    img = image([task(100, 1, [Fd(3, 1), Fd(4, 2)])], files)
    r = start(restarted, img, argv=python(code, str(res)))
    pid = r.pids[100]
    assert int(fdinfo(pid, 3)["eventfd-count"], 16) == 7
    assert fd_flags(pid, 3) & os.O_NONBLOCK and not fd_flags(pid, 4) & os.O_NONBLOCK
    r.release()
    assert r.wait(WAIT) == {100: 0}
    assert json.loads(res.read_text()) == [7, "eagain", [1, 1]]  # EFD_SEMAPHORE


def test_epoll_over_pipe_and_eventfd(restarted, out: Path) -> None:
    code = """
    import json, os, select, sys
    ep = select.epoll.fromfd(6)
    first = sorted(ep.poll(0))
    os.write(5, (1).to_bytes(8, "little"))
    second = sorted(ep.poll(0))
    json.dump([first, second], open(sys.argv[1], "w"))
    """
    pin, ev = select.EPOLLIN, select.EPOLLIN | select.EPOLLET
    files = [
        pipe_end(1, 10, READ),
        pipe_end(2, 10, WRITE),
        File(
            3,
            FileKind.EVENTFD,
            os.O_RDWR | os.O_NONBLOCK,
            READ | WRITE,
            extra=Eventfd(),
        ),
        File(4, FileKind.EPOLL, os.O_RDWR, READ | WRITE),
    ]
    # tfd 8 for the eventfd: added under a number the task no longer uses
    items = [EpollItem(1, 3, pin, 0x1111), EpollItem(3, 8, ev, 0x2222)]
    img = image(
        [task(100, 1, [Fd(3, 1), Fd(4, 2), Fd(5, 3), Fd(6, 4)])],
        files,
        pipes=[Pipe(10, size=4096, data=b"x")],
        epolls=[Epoll(4, items)],
    )
    res = out / "res.json"
    before = my_fds()
    r = start(restarted, img, argv=python(code, str(res)))
    pid = r.pids[100]
    assert fd_numbers(pid) == [3, 4, 5, 6]
    info = Path(f"/proc/{pid}/fdinfo/6").read_text()
    tfds = {
        int(line.split()[1]): (int(line.split()[3], 16), int(line.split()[5], 16))
        for line in info.splitlines()
        if line.startswith("tfd:")
    }
    err_hup = select.EPOLLERR | select.EPOLLHUP
    assert tfds == {3: (pin | err_hup, 0x1111), 8: (ev | err_hup, 0x2222)}
    assert kcmp_epoll_tfd(pid, 3, pid, 6, 3) and kcmp_epoll_tfd(pid, 5, pid, 6, 8)
    assert_coordinator_holds_nothing(r, before)
    r.release()
    assert r.wait(WAIT) == {100: 0}
    # the pipe has data at once; the eventfd once written
    assert json.loads(res.read_text()) == [
        [[0x1111, pin]],
        [[0x1111, pin], [0x2222, pin]],
    ]


def test_three_level_tree(restarted, tmp_path: Path) -> None:
    # 100 leads a session; 101 leads a group that 102 joins; 103 stays in 100's
    files = [pipe_end(1, 10, READ), pipe_end(2, 10, WRITE)]
    tasks = [
        task(100, 1, [Fd(0, 1)], cwd=str(tmp_path)),
        task(101, 100, [Fd(1, 2)], sid=100, cwd="/tmp"),
        task(102, 101, [Fd(1, 2)], sid=100, pgid=101),
        task(103, 100, [], sid=100, pgid=100),
    ]
    t0 = time.monotonic()
    r = start(restarted, image(tasks, files, pipes=[Pipe(10, 4096)]))
    took = time.monotonic() - t0
    n = r.pids
    assert sorted(n) == [100, 101, 102, 103]
    st = {rec: proc_stat(new) for rec, new in n.items()}
    assert st[100] == {"ppid": os.getpid(), "pgrp": n[100], "session": n[100]}
    assert st[101] == {"ppid": n[100], "pgrp": n[101], "session": n[100]}
    assert st[102] == {"ppid": n[101], "pgrp": n[101], "session": n[100]}
    assert st[103] == {"ppid": n[100], "pgrp": n[100], "session": n[100]}
    assert os.readlink(f"/proc/{n[100]}/cwd") == str(tmp_path)
    assert os.readlink(f"/proc/{n[101]}/cwd") == "/tmp"
    assert kcmp_file(n[101], 1, n[102], 1)
    assert [fd_numbers(n[x]) for x in (100, 101, 102, 103)] == [[0], [1], [1], []]
    r.release()
    assert r.wait(WAIT) == {100: 0}
    print(f"restart of 4 tasks to the barrier: {took * 1000:.0f} ms")


# ---- the half-closed pipe race, policy by policy -------------------------------

HALF_READER = """
import json, os, select, sys
def state():
    try:
        return "eof" if os.read(3, 100) == b"" else "data"
    except BlockingIOError:
        return "eagain"
first = state()
open(sys.argv[1] + ".first", "w").write(first)
p = select.poll()
p.register(3, select.POLLIN)
p.poll(60000)
json.dump([first, state()], open(sys.argv[1], "w"))
"""

HALF_WRITER = """
import json, os, select, sys
def state():
    try:
        os.write(4, b"x")
        return "ok"
    except BrokenPipeError:
        return "epipe"
first = state()
open(sys.argv[1] + ".first", "w").write(first)
p = select.poll()
p.register(4, 0)  # POLLERR: no reader left
p.poll(60000)
json.dump([first, state()], open(sys.argv[1], "w"))
"""


@pytest.mark.parametrize("policy", list(Policy), ids=lambda p: p.name)
@pytest.mark.parametrize("side", ["reader", "writer"])
def test_half_closed_pipe(restarted, out: Path, policy, side) -> None:
    # the other end was closed by every task: only the hash holds it
    if side == "reader":
        files = [pipe_end(1, 10, READ, os.O_NONBLOCK)]
        pipe, fds, code = Pipe(10, 4096, no_writer=True), [Fd(3, 1)], HALF_READER
    else:
        files = [pipe_end(1, 10, WRITE, os.O_NONBLOCK)]
        pipe, fds, code = Pipe(10, 4096, no_reader=True), [Fd(4, 1)], HALF_WRITER
    res = out / "res.json"
    img = image([task(100, 1, fds)], files, pipes=[pipe])
    r = start(restarted, img, policy=policy, argv=python(code, str(res)))
    r.release()
    closed = "eof" if side == "reader" else "epipe"
    if policy == Policy.CLEAR_AT_END:
        # the half-closed pipe race: the pipe "re-opens" while the hash holds it
        wait_for(out / "res.json.first")
        time.sleep(0.5)
        assert not res.exists(), "the program saw the pipe close before teardown"
        assert (out / "res.json.first").read_text() != closed
        r.teardown()
        assert r.wait(WAIT) == {100: 0}
        assert results(res) == ["eagain" if side == "reader" else "ok", closed]
    else:
        assert r.wait(WAIT) == {100: 0}
        assert results(res) == [closed, closed]


# ---- failures ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, clean) -> None:
    gone = tmp_path / "gone"
    files = [
        pipe_end(1, 10, READ),
        File(2, FileKind.REG, os.O_RDONLY, READ, path=str(gone)),
    ]
    img = image([task(100, 1, [Fd(3, 1), Fd(4, 2)])], files, pipes=[Pipe(10, 4096)])
    children = psutil.Process().children(recursive=True)
    with pytest.raises(RestartError, match=f"objref 2: .*{gone}"):
        restart(img)
    assert psutil.Process().children(recursive=True) == children


def test_chdir_failure_kills_every_stub(clean) -> None:
    files = [pipe_end(1, 10, READ)]
    tasks = [
        task(100, 1, [Fd(3, 1)]),
        task(101, 100, [Fd(3, 1)]),
        task(102, 101, [], cwd="/nonexistent"),
        task(103, 101, [Fd(5, 1)]),
        task(104, 100, []),
    ]
    img = image(tasks, files, pipes=[Pipe(10, 4096)])
    with pytest.raises(RestartError, match="task 102: chdir /nonexistent"):
        restart(img, release=False)
    deadline = time.monotonic() + 10
    while forks_of_me() and time.monotonic() < deadline:
        time.sleep(0.05)  # orphaned stubs are reaped by init


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda i: setattr(i.files[1], "kind", FileKind.SOCK), "kind SOCK"),
        (lambda i: i.tasks[0].fds.append(Fd(3, 1)), "duplicate fd 3"),
        (lambda i: i.tasks[0].fds.append(Fd(4, 99)), "no file 99"),
        (lambda i: setattr(i.tasks[0], "ppid", 5) or i.tasks.reverse(), "parent"),
        (lambda i: pipes(i).clear(), "no PIPE record"),
    ],
)
def test_bad_image_creates_nothing(change, match, clean) -> None:
    img = image(
        [task(100, 1, [Fd(3, 1)]), task(101, 100, [])],
        [pipe_end(1, 10, READ)],
        pipes=[Pipe(10, 4096)],
    )
    change(img)
    children = psutil.Process().children(recursive=True)
    with pytest.raises(RestartError, match=match):
        restart(img)
    assert psutil.Process().children(recursive=True) == children


def test_exec_failure_exits_127(clean) -> None:
    img = image([task(100, 1, [])], [])
    r = restart(img, argv=["/nonexistent/program"])
    assert r.wait(WAIT) == {100: 127}


def test_kill_at_barrier_and_context_manager(clean) -> None:
    img = image(
        [task(100, 1, [Fd(3, 1)]), task(101, 100, [Fd(3, 1)])],
        [pipe_end(1, 10, READ)],
        pipes=[Pipe(10, 4096, data=b"abc")],
    )
    with restart(img, release=False) as r:
        pids = list(r.pids.values())
        assert all(psutil.pid_exists(p) for p in pids)
        with pytest.raises(RestartError, match="before release"):
            r.wait(0)
    assert r.context.closed
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) for p in pids)


def test_release_twice(clean) -> None:
    with restart(image([task(100, 1, [])], []), argv=["/bin/true"]) as r:
        with pytest.raises(RestartError, match="already released"):
            r.release()
        assert r.wait(WAIT) == {100: 0}


def test_sigpipe_default_after_exec(restarted) -> None:
    # the coordinator (Python) ignores SIGPIPE; the restarted task must not
    files = [pipe_end(1, 10, WRITE)]
    img = image(
        [task(100, 1, [Fd(1, 1)])], files, pipes=[Pipe(10, 4096, no_reader=True)]
    )
    r = start(restarted, img, argv=["/bin/echo", "hello"])
    r.release()
    assert r.wait(WAIT) == {100: -signal.SIGPIPE}


def test_tree_of_16_tasks_timing(restarted) -> None:
    # a ternary tree of 16 tasks; 16 pipes whose ends every task inherited,
    # and an eventfd of each task's own
    npipes, ntasks = 16, 16
    files = [pipe_end(1 + 2 * k, 1000 + k, READ) for k in range(npipes)]
    files += [pipe_end(2 + 2 * k, 1000 + k, WRITE) for k in range(npipes)]
    files += [
        File(500 + i, FileKind.EVENTFD, os.O_RDWR, READ | WRITE, extra=Eventfd(i))
        for i in range(ntasks)
    ]
    shared = [Fd(3 + n, 1 + n) for n in range(2 * npipes)]
    tasks = [
        task(100 + i, 100 + (i - 1) // 3 if i else 1, [*shared, Fd(40, 500 + i)])
        for i in range(ntasks)
    ]
    pipes = [Pipe(1000 + k, 4096, data=b"d" * k) for k in range(npipes)]
    t0 = time.monotonic()
    r = start(restarted, image(tasks, files, pipes=pipes), argv=["/bin/true"])
    t1 = time.monotonic()
    n = r.pids
    want = [*range(3, 3 + 2 * npipes), 40]
    assert all(fd_numbers(n[t.pid]) == want for t in tasks)
    assert all(kcmp_file(n[100], 3, n[t.pid], 3) for t in tasks)
    assert [int(fdinfo(n[t.pid], 40)["eventfd-count"], 16) for t in tasks] == list(
        range(ntasks)
    )
    assert all(proc_stat(n[t.pid])["ppid"] == n[t.ppid] for t in tasks[1:])
    r.release()
    t2 = time.monotonic()
    assert r.wait(WAIT) == {100: 0}
    print(
        f"{ntasks} tasks x {len(want)} fds, {len(files)} files: barrier "
        f"{(t1 - t0) * 1000:.0f} ms, release {(t2 - t1) * 1000:.1f} ms"
    )


def test_fd_above_the_soft_limit(restarted) -> None:
    # the recorded task had a higher limit: the stub raises its own soft one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= soft + 10:
        pytest.skip(f"no room above the soft fd limit ({soft}, {hard})")
    high = soft + 5
    files = [pipe_end(1, 10, READ), pipe_end(2, 10, WRITE)]
    img = image([task(100, 1, [Fd(3, 1), Fd(high, 2)])], files, pipes=[Pipe(10, 4096)])
    r = start(restarted, img)
    pid = r.pids[100]
    assert fd_numbers(pid) == [3, high]
    limits = Path(f"/proc/{pid}/limits").read_text()
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert line.split()[3:5] == [str(high + 1), str(hard)]
    r.release()
    assert r.wait(WAIT) == {100: 0}


def test_epoll_item_failure_kills_every_stub(clean) -> None:
    # an epoll cannot watch itself (EINVAL): step 4 fails after the stubs exist
    files = [File(1, FileKind.EPOLL, os.O_RDWR, READ | WRITE)]
    img = image(
        [task(100, 1, [Fd(3, 1)]), task(101, 100, [Fd(3, 1)])],
        files,
        epolls=[Epoll(1, [EpollItem(1, 7, select.EPOLLIN, 0)])],
    )
    with pytest.raises(RestartError, match="epoll 1: add target 1 as tfd 7"):
        restart(img)
    deadline = time.monotonic() + 10
    while forks_of_me() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_dense_table_in_place_and_moved(restarted) -> None:
    """A stub fetches its files in the order of their first fds: most land
    at their recorded number and stay, the others move above the table and
    are dup'ed down.  Either way each fd is its file with its own
    close-on-exec flag, and nothing else is open."""
    rw = READ | WRITE
    files = [
        File(i, FileKind.EVENTFD, os.O_RDWR, rw, extra=Eventfd(100 + i))
        for i in range(1, 8)
    ]
    # 0-5 each a file of their own (0 the stub's own first free number),
    # 6 a dup of 0, a gap at 7-8, 9 and 10 two more, 11 a dup of 4
    numbers = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 1, 9: 7, 10: 2, 11: 5}
    cloexec = {1, 4, 6, 10}
    fds = [Fd(n, ref, cloexec=n in cloexec) for n, ref in numbers.items()]
    r = start(restarted, image([task(100, 1, fds)], files))
    pid = r.pids[100]
    assert fd_numbers(pid) == sorted(numbers)
    for n, ref in numbers.items():
        assert int(fdinfo(pid, n)["eventfd-count"], 16) == 100 + ref, n
        assert bool(fd_flags(pid, n) & O_CLOEXEC) == (n in cloexec), n
    assert kcmp_file(pid, 0, pid, 6) and kcmp_file(pid, 4, pid, 11)
    assert kcmp_file(pid, 1, pid, 10) and not kcmp_file(pid, 0, pid, 1)
