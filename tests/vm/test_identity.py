"""Restart gives each task what it had, no more: credentials, limits,
environment and executable (checkpointed from a real exec'd task), file
identity on reopen, and nothing left behind when a coordinator dies.

Each test checks the kernel's view (/proc/PID/status, /proc/PID/limits,
/proc/PID/exe, /proc/PID/environ) of the restarted task.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import pyckpt
from pyckpt import FileKind, FMode
from pyckpt.checkpointer import checkpoint
from pyckpt.errors import CheckpointError, RestartError
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds.epoll import Epoll, EpollItem, epolls
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.kinds.pipe import Pipe
from pyckpt.model import RLIM_INFINITY
from pyckpt.restarter import Limits, restart

PY = "/usr/bin/python3"  # Debian's, readable and executable by nobody
NOBODY = 65534
WAIT = 30.0
SLEEP_CODE = "import time\nwhile True: time.sleep(1)"


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _close_stdio() -> None:
    # the guest's fds 0-2 are character devices: no checkpoint saves them
    for fd in (0, 1, 2):
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 300))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 1 << 20))


@pytest.fixture
def nobody_task() -> Iterator[subprocess.Popen]:
    """A real process: uid/gid 65534, a supplementary group, umask 027,
    custom limits and environment, argv[0] rewritten to "-fake"."""
    p = subprocess.Popen(
        ["-fake", "-c", SLEEP_CODE],
        executable=PY,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[65533, 100],
        umask=0o027,
        env={"MARKER": "a b=c", "PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        cwd="/",
        preexec_fn=_close_stdio,
        close_fds=True,
    )
    deadline = time.monotonic() + WAIT
    while Path(f"/proc/{p.pid}/exe").resolve() != Path(PY).resolve():
        assert time.monotonic() < deadline, "the task never exec'd"
        time.sleep(0.02)
    while "-fake" not in Path(f"/proc/{p.pid}/cmdline").read_bytes().decode():
        time.sleep(0.02)
    yield p
    p.kill()
    p.wait()


def test_credentials_recorded(nobody_task: subprocess.Popen) -> None:
    img = checkpoint(nobody_task.pid).image
    (t,) = img.tasks
    assert (t.ruid, t.euid, t.suid, t.fsuid) == (NOBODY,) * 4
    assert (t.rgid, t.egid, t.sgid, t.fsgid) == (NOBODY,) * 4
    assert sorted(t.groups) == [100, 65533]
    assert t.umask == 0o027
    assert t.rlimits is not None
    assert t.rlimits[resource.RLIMIT_NOFILE] == (200, 300)
    assert t.rlimits[resource.RLIMIT_CORE] == (0, 1 << 20)
    assert "MARKER=a b=c" in t.env and "LC_ALL=C" in t.env
    assert t.exe == os.path.realpath(PY)
    assert t.argv[0] == "-fake" and t.root == "/"


def test_restart_as_exactly_that_task(nobody_task: subprocess.Popen, tmp_path: Path):
    path = tmp_path / "nobody.img"
    pyckpt.checkpoint(nobody_task.pid, path)
    nobody_task.kill()
    nobody_task.wait()
    r = pyckpt.restart(path, release=False)
    try:
        (new,) = r.pids.values()
        # at the barrier: the credentials are taken already
        st = status(new)
        assert st["Uid"].split() == [str(NOBODY)] * 4
        assert st["Gid"].split() == [str(NOBODY)] * 4
        assert sorted(st["Groups"].split()) == ["100", "65533"]
        assert st["Umask"] == "0027"
        # a non-root task keeps no capability
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
        assert int(st["CapAmb"], 16) == 0
        assert resource.prlimit(new, resource.RLIMIT_NOFILE) == (200, 300)
        assert resource.prlimit(new, resource.RLIMIT_CORE) == (0, 1 << 20)
        r.release()
        # then its own program again: the recorded exe, argv and environment
        deadline = time.monotonic() + WAIT
        while Path(f"/proc/{new}/cmdline").read_bytes().split(b"\0")[0] != b"-fake":
            assert time.monotonic() < deadline, "never exec'd"
            time.sleep(0.02)
        assert Path(f"/proc/{new}/exe").resolve() == Path(PY).resolve()
        env = Path(f"/proc/{new}/environ").read_bytes().split(b"\0")[:-1]
        assert sorted(env) == sorted(
            [b"MARKER=a b=c", b"PATH=/usr/bin:/bin", b"LC_ALL=C"]
        )
        assert status(new)["Uid"].split() == [str(NOBODY)] * 4
        assert int(status(new)["CapEff"], 16) == 0
    finally:
        r.kill()


def _image(tasks: list[Task], files=(), pipes=()) -> Image:
    u = os.uname()
    return Image(
        head=Head(time.time(), u.sysname, u.release, u.version, u.machine),
        tasks=tasks,
        files={f.objref: f for f in files},
        extra={"pipe": {p.objref: p for p in pipes}},
    )


def _task(pid: int, ppid: int, fds=(), **kw) -> Task:
    kw.setdefault("argv", ["/bin/true"])
    return Task(pid, ppid, pid, pid, "t", cwd="/", fds=list(fds), **kw)


def test_credential_failure_kills_every_stub() -> None:
    """One task's credentials cannot be taken (a hard limit above
    fs.nr_open): restart fails and no stub is left of the whole tree."""
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    rl = [resource.getrlimit(r) for r in range(16)]
    rl = [(RLIM_INFINITY if c < 0 else c, RLIM_INFINITY if m < 0 else m) for c, m in rl]
    bad = list(rl)
    bad[resource.RLIMIT_NOFILE] = (nr_open + 1, nr_open + 1)
    tasks = [
        _task(100, 1),
        _task(101, 100, rlimits=rl),
        _task(
            102, 101, rlimits=bad, ruid=NOBODY, euid=NOBODY, suid=NOBODY, fsuid=NOBODY
        ),
        _task(103, 100),
    ]
    seen: list[int] = []
    real_spawn = pyckpt.restarter._spawn

    def spy(ctx, plan, procs, timeout):
        try:
            real_spawn(ctx, plan, procs, timeout)
        finally:
            seen.extend(procs.pids.values())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pyckpt.restarter, "_spawn", spy)
        with pytest.raises(RestartError, match="task 102: setrlimit 7"):
            restart(_image(tasks))
    assert seen and wait_gone(seen, 10) == []


def test_uid_minus_one_is_refused() -> None:
    # (uid_t)-1 means "unchanged" to setresuid(): it would stay root
    t = _task(100, 1, ruid=0xFFFFFFFF, euid=0xFFFFFFFF, suid=0xFFFFFFFF)
    with pytest.raises(RestartError, match="out of range"):
        restart(_image([t]))


def test_chrooted_and_namespaced_tasks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RestartError, match="chrooted tasks are not supported"):
        restart(_image([_task(100, 1, root="/srv")]))
    p = subprocess.Popen(
        ["unshare", "--mount", PY, "-c", SLEEP_CODE], preexec_fn=_close_stdio
    )
    try:
        deadline = time.monotonic() + WAIT
        while os.path.realpath(f"/proc/{p.pid}/exe") != os.path.realpath(PY):
            assert time.monotonic() < deadline, "unshare never exec'd python"
            time.sleep(0.02)
        with pytest.raises(CheckpointError, match="another mnt namespace"):
            checkpoint(p.pid)
    finally:
        p.kill()
        p.wait()


# ---- nothing left behind ---------------------------------------------------------

COORDINATOR = """
import os, sys, time
import pyckpt
r = pyckpt.restart(sys.argv[1], release=False)
print(" ".join(map(str, r.pids.values())), flush=True)
time.sleep(1000)
"""


def test_stubs_die_with_their_coordinator(tmp_path: Path) -> None:
    tasks = [_task(100, 1), _task(101, 100), _task(102, 101)]
    path = tmp_path / "three.img"
    _image(tasks).save(path)
    coord = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, str(path)], stdout=subprocess.PIPE
    )
    try:
        line = coord.stdout.readline().decode()
        stubs = [int(x) for x in line.split()]
        assert len(stubs) == 3 and all(_alive(p) for p in stubs)
        coord.send_signal(signal.SIGKILL)
        coord.wait()
        # a chain of PDEATHSIGs: generous under a loaded emulated guest
        assert wait_gone(stubs, 10.0) == [], [
            status(p)["State"] for p in stubs if _alive(p)
        ]
    finally:
        coord.kill()
        coord.wait()
        coord.stdout.close()


def test_dropped_restarted_kills_its_stubs() -> None:
    r = restart(_image([_task(100, 1), _task(101, 100)]), release=False)
    stubs = list(r.pids.values())
    del r
    gc.collect()
    assert wait_gone(stubs, 5.0) == []


def test_limits_refuse_a_big_image() -> None:
    tasks = [_task(100 + i, 100 if i else 1) for i in range(5)]
    with pytest.raises(RestartError, match="5 tasks, above the limit of 4"):
        restart(_image(tasks), limits=Limits(tasks=4))
    fds = [Fd(i, 1) for i in range(3, 10)]
    pipe = File(1, FileKind.PIPE, os.O_RDONLY, FMode.READ, pipe_objref=2)
    img = _image([_task(100, 1, fds)], [pipe], [Pipe(2, 65536, b"x" * 1000)])
    with pytest.raises(RestartError, match="7 fds, above the limit of 6"):
        restart(img, limits=Limits(fds=6))
    with pytest.raises(RestartError, match="1000 bytes of pipe data, above"):
        restart(img, limits=Limits(pipe_bytes=999))


# ---- checkpoint: signals and the watchdog ----------------------------------------

TREE = [PY, "-c", SLEEP_CODE]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    p = subprocess.Popen(TREE, preexec_fn=_close_stdio)
    deadline = time.monotonic() + WAIT
    while os.path.realpath(f"/proc/{p.pid}/exe") != os.path.realpath(PY):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield p
    p.kill()
    p.wait()


def _running(pid: int) -> bool:
    return psutil.Process(pid).status() in (
        psutil.STATUS_SLEEPING,
        psutil.STATUS_RUNNING,
    )


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_sigterm_while_frozen_thaws(sleeper, freezer, monkeypatch) -> None:
    import pyckpt.checkpointer as cp

    real = cp._collect
    states = []

    def collect_then_sigterm(frz, col):
        real(frz, col)
        states.append(psutil.Process(sleeper.pid).status())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(cp, "_collect", collect_then_sigterm)
    with pytest.raises(CheckpointError, match="interrupted by SIGTERM") as ei:
        checkpoint(sleeper.pid, freezer=freezer)
    assert ei.value.errno == 4  # EINTR
    if freezer == "signal":
        assert states == [psutil.STATUS_STOPPED]
    deadline = time.monotonic() + 5
    while not _running(sleeper.pid):
        assert time.monotonic() < deadline, "left frozen"
        time.sleep(0.02)


KILLED_COORDINATOR = """
import os, signal, sys
import pyckpt.checkpointer as cp
real = cp._collect
def collect_then_die(frz, col):
    real(frz, col)
    print("frozen", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
cp._collect = collect_then_die
cp.checkpoint(int(sys.argv[1]), freezer=sys.argv[2])
"""


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_sigkilled_coordinator_tree_thawed_within_a_second(sleeper, freezer):
    coord = subprocess.Popen(
        [sys.executable, "-c", KILLED_COORDINATOR, str(sleeper.pid), freezer],
        stdout=subprocess.PIPE,
    )
    try:
        assert coord.stdout.readline() == b"frozen\n"
        coord.wait()
        assert coord.returncode == -signal.SIGKILL
        died = time.monotonic()

        def home() -> bool:  # moved back where it came from
            return "pyckpt-" not in Path(f"/proc/{sleeper.pid}/cgroup").read_text()

        while not (_running(sleeper.pid) and home()):
            assert time.monotonic() - died < 1.0, "still frozen a second later"
            time.sleep(0.01)
    finally:
        coord.kill()
        coord.wait()
        coord.stdout.close()


def test_kill_only_after_the_image_is_written(sleeper, tmp_path: Path) -> None:
    bad = tmp_path / "no" / "such" / "dir" / "x.img"
    with pytest.raises(CheckpointError, match="thawed, not killed"):
        pyckpt.checkpoint(sleeper.pid, bad, kill=True)
    deadline = time.monotonic() + 5  # SIGCONT's wakeup may lag the call
    while not _running(sleeper.pid):
        assert time.monotonic() < deadline, psutil.Process(sleeper.pid).status()
        time.sleep(0.01)
    good = tmp_path / "x.img"
    pyckpt.checkpoint(sleeper.pid, good, kill=True)
    assert Image.load(good).tasks[0].pid == sleeper.pid
    assert wait_gone([sleeper.pid], 5) == []


# ---- verified reopen ------------------------------------------------------------------


def _reg_image(path: Path, pos: int = 0, flags: int = os.O_RDONLY) -> Image:
    st = os.stat(path)
    f = File(
        1,
        FileKind.REG,
        flags,
        FMode.READ,
        pos=pos,
        path=str(path),
        st_dev=st.st_dev,
        st_ino=st.st_ino,
        st_mode=st.st_mode,
        st_uid=st.st_uid,
        st_gid=st.st_gid,
        st_size=st.st_size,
    )
    return _image([_task(100, 1, [Fd(3, 1)])], [f])


def _restart_ok(img: Image, **kw) -> list[str]:
    with warnings_caught() as w:
        r = restart(img, release=False, **kw)
        r.kill()
    return [str(x.message) for x in w]


@contextlib.contextmanager
def warnings_caught():
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        yield w


def test_replaced_file_is_refused_unless_relocated(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("hello")
    img = _reg_image(p)
    p.unlink()
    p.write_text("other")  # a new inode at the same path
    with pytest.raises(RestartError, match="not the file that was checkpointed.*inode"):
        restart(img)
    assert _restart_ok(img, relocate=True) == []


def test_symlink_and_owner_and_type_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("hello")
    img = _reg_image(p)
    os.chown(p, NOBODY, NOBODY)
    with pytest.raises(RestartError, match="owner 65534:65534, recorded 0:0"):
        restart(img, relocate=True)
    os.chown(p, 0, 0)
    target = tmp_path / "g"
    p.rename(target)
    p.symlink_to(target)  # the same file, through a symlink
    with pytest.raises(RestartError, match="type symbolic link, recorded regular"):
        restart(img, relocate=True)


def test_reg_record_never_opens_a_device(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("hello")
    img = _reg_image(p)
    p.unlink()
    os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    with pytest.raises(RestartError, match="type character device"):
        restart(img, relocate=True)


def test_fifo_never_blocks_and_creation_flags_are_dropped(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    st = os.stat(fifo)
    ident = {
        "st_dev": st.st_dev,
        "st_ino": st.st_ino,
        "st_mode": st.st_mode,
        "st_uid": st.st_uid,
        "st_gid": st.st_gid,
    }
    files = [
        File(
            1,
            FileKind.FIFO,
            os.O_WRONLY,
            FMode.WRITE,
            path=str(fifo),
            pipe_objref=10,
            **ident,
        ),
    ]
    img = _image([_task(100, 1, [Fd(3, 1)])], files, [Pipe(10, 4096)])
    start = time.monotonic()
    assert _restart_ok(img) == []
    assert time.monotonic() - start < WAIT
    p = tmp_path / "f"
    p.write_text("keep me")
    img = _reg_image(p, flags=os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_EXCL)
    img.files[1].f_mode = FMode.WRITE
    assert _restart_ok(img) == []
    assert p.read_text() == "keep me"


def test_file_shorter_than_its_offset_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("0123456789")
    img = _reg_image(p, pos=8)
    p.write_text("0123")  # same inode, truncated
    (w,) = _restart_ok(img)
    assert "4 bytes, shorter than its saved offset 8" in w


def test_restarted_task_at_barrier_is_nonblocking_only_if_recorded(tmp_path):
    p = tmp_path / "f"
    p.write_text("x")
    r = restart(_reg_image(p), release=False)
    try:
        (new,) = r.pids.values()
        flags = int(Path(f"/proc/{new}/fdinfo/3").read_text().split()[3], 8)
        assert not flags & os.O_NONBLOCK
    finally:
        r.kill()


# ---- eventfd edge cases --------------------------------------------------------------


def test_eventfd_count_above_32_bits_restarts() -> None:
    big = (1 << 40) + 5
    f = File(
        1, FileKind.EVENTFD, os.O_RDWR, FMode.READ | FMode.WRITE, extra=Eventfd(big)
    )
    r = restart(_image([_task(100, 1, [Fd(3, 1)])], [f]), release=False)
    try:
        (new,) = r.pids.values()
        info = Path(f"/proc/{new}/fdinfo/3").read_text()
        assert f"eventfd-count: {big:16x}" in info or f"{big:x}" in info
    finally:
        r.kill()


def test_eventfd_semaphore_unknown_warns_once() -> None:
    def efd(objref: int, unknown: bool) -> File:
        rw = FMode.READ | FMode.WRITE
        return File(
            objref, FileKind.EVENTFD, os.O_RDWR, rw, extra=Eventfd(sem_unknown=unknown)
        )

    files = [efd(i, unknown=i != 2) for i in range(1, 9)]
    fds = [Fd(2 + f.objref, f.objref) for f in files]
    w = _restart_ok(_image([_task(100, 1, fds)], files))
    # one warning for the seven, naming five: not one per eventfd
    assert w == [
        (
            "7 eventfds (objrefs 1, 3, 4, 5, 6 and 2 more) restarted without "
            "EFD_SEMAPHORE: the checkpointing kernel did not say whether it was set"
        )
    ]


def test_eventfd_semaphore_recorded_as_the_kernel_says() -> None:
    """6.12 shows eventfd-semaphore in fdinfo, 6.1 does not: the image says
    known or unknown accordingly, never 'not semaphore' by guess."""
    code = textwrap.dedent(
        """
        import os, time
        a = os.eventfd(3, os.EFD_SEMAPHORE)
        os.dup2(a, 5)
        while True: time.sleep(1)
        """
    )
    p = subprocess.Popen([PY, "-c", code], preexec_fn=_close_stdio)
    try:
        deadline = time.monotonic() + WAIT
        while not os.path.exists(f"/proc/{p.pid}/fd/5"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        img = checkpoint(p.pid).image
        (f,) = [x for x in img.files.values() if x.kind == FileKind.EVENTFD]
        shown = "eventfd-semaphore" in Path(f"/proc/{p.pid}/fdinfo/5").read_text()
        assert f.extra.sem_unknown == (not shown)
        if shown:
            assert f.extra.efd_flags == os.EFD_SEMAPHORE
    finally:
        p.kill()
        p.wait()


# ---- epoll: two items with one fd number -------------------------------------------

TWO_ITEMS = """
import os, select, time
ep = select.epoll()
ra, wa = os.pipe()
rb, wb = os.pipe()
os.dup2(ra, 10)
ep.register(10, select.EPOLLIN)
os.close(10)          # no EPOLL_CTL_DEL: the item stays while ra is open
os.dup2(rb, 10)
ep.register(10, select.EPOLLIN | select.EPOLLET)
os.write(wa, b"a")
os.mkfifo(os.environ["READY"])
while True: time.sleep(1)
"""


def test_two_epoll_items_with_one_fd_number(tmp_path: Path) -> None:
    """After a close without EPOLL_CTL_DEL two items share tfd 10: each is
    matched to its own file (kcmp's toff), and the round trip keeps both."""
    ready = tmp_path / "ready"
    p = subprocess.Popen(
        [PY, "-c", TWO_ITEMS], preexec_fn=_close_stdio, env={"READY": str(ready)}
    )
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        img = checkpoint(p.pid).image
        (ep,) = epolls(img).values()
        items = sorted((i.tfd, i.events) for i in ep.items)
        assert [t for t, _ in items] == [10, 10]
        targets = {i.target for i in ep.items}
        assert len(targets) == 2, ep.items  # two files, not the first twice
        r = restart(img, argv=["/bin/true"], release=False)
        try:
            (new,) = r.pids.values()
            efd = next(
                fd.fd
                for fd in img.tasks[0].fds
                if img.files[fd.objref].kind == FileKind.EPOLL
            )
            info = Path(f"/proc/{new}/fdinfo/{efd}").read_text()
            assert len(re.findall(r"^tfd:\s+10\s", info, re.MULTILINE)) == 2, info
        finally:
            r.kill()
    finally:
        p.kill()
        p.wait()


# ---- cgroup freezer: a child forked during the freeze ---------------------------------

FORKER = """
import os, signal, time
def on_usr1(sig, frame):
    pid = os.fork()
    if pid == 0:
        while True: time.sleep(1)
    with open(os.environ["CHILD"] + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(os.environ["CHILD"] + ".tmp", os.environ["CHILD"])
signal.signal(signal.SIGUSR1, on_usr1)
open(os.environ["READY"], "w").close()
while True: time.sleep(1)
"""


def test_cgroup_child_forked_during_the_freeze_goes_home(tmp_path, monkeypatch):
    """A child forked after its parent was moved into the freezer cgroup
    (and before it froze) is put back where its parent came from; it used to
    be 'moved back' into the freezer cgroup, whose removal then failed and
    lost the image."""
    import pyckpt.freeze as fz

    ready, child_file = tmp_path / "ready", tmp_path / "child"
    p = subprocess.Popen(
        [PY, "-c", FORKER],
        env={"READY": str(ready), "CHILD": str(child_file)},
        preexec_fn=_close_stdio,
    )
    child = 0
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        origin = Path(f"/proc/{p.pid}/cgroup").read_text()
        real = fz.CgroupFreezer._write

        def write(self, name, value, cgroup=None):
            if name == "cgroup.freeze" and value == "1" and not child_file.exists():
                os.kill(p.pid, signal.SIGUSR1)  # it forks inside our cgroup
                while not child_file.exists():
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            real(self, name, value, cgroup)

        monkeypatch.setattr(fz.CgroupFreezer, "_write", write)
        res = checkpoint(p.pid, freezer="cgroup")
        child = int(child_file.read_text())
        assert {t.pid for t in res.image.tasks} == {p.pid, child}
        assert Path(f"/proc/{child}/cgroup").read_text() == origin
        assert Path(f"/proc/{p.pid}/cgroup").read_text() == origin
    finally:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        p.kill()
        p.wait()


def test_keyboard_interrupt_reaps_the_epoll_helper(monkeypatch) -> None:
    """Ctrl-C while the epoll helper works: the helper is killed and reaped
    (no zombie, no stray process), and so is every stub."""
    import select

    import pyckpt.restarter as rs

    rw = FMode.READ | FMode.WRITE
    files = [
        File(1, FileKind.EVENTFD, os.O_RDWR, rw, extra=Eventfd()),
        File(2, FileKind.EPOLL, os.O_RDWR, rw),
    ]
    img = _image([_task(100, 1, [Fd(3, 1), Fd(4, 2)])], files)
    epolls(img)[2] = Epoll(2, [EpollItem(1, 3, 1, 7)])
    spawned = []
    real_spawn, real_poll = rs._spawn, select.poll

    def spawn(*a):
        real_spawn(*a)
        spawned.append(True)

    class Poll:
        def __init__(self):
            self.p = real_poll()

        def register(self, *a):
            self.p.register(*a)

        def poll(self, *a):
            if len(spawned) == 1:  # the epoll step's wait, once: not the cleanup's
                spawned.append(True)
                raise KeyboardInterrupt
            return self.p.poll(*a)

    before = {c.pid for c in psutil.Process().children()}
    monkeypatch.setattr(rs, "_spawn", spawn)
    monkeypatch.setattr(select, "poll", Poll)
    with pytest.raises(KeyboardInterrupt):
        restart(img)
    monkeypatch.undo()
    assert spawned
    left = [c for c in psutil.Process().children() if c.pid not in before]
    assert left == [], [(c.pid, c.status()) for c in left]
