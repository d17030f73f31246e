"""Trees as a user's shell starts them: under a pty with stdio on it, an
``sh -c 'producer | consumer'`` pipeline, a daemon on /dev/null, a tree on
the VM's console.  Each is checkpointed, killed, restarted and compared
with the oracle (tests/vm/oracle.py), sessions and terminals included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import select
import signal
import stat
import termios
import time
from collections.abc import Callable, Iterator

import pytest
from oracle import SessionFacts, ctty_of, facts, ppids, sessions, wait_for
from trees import Member, set_subreaper, spawn

import pyckpt
from pyckpt import cli
from pyckpt.abi import FileKind
from pyckpt.errors import CheckpointError, RestartError
from pyckpt.image import Image
from pyckpt.kinds.chrdev import named_by_user
from pyckpt.kinds.tty import Tty, TtyFlag
from pyckpt.syscalls import kcmp_file, pidfd_getfd

SLEEP = ["sleep", "1000"]


@contextlib.contextmanager
def stdio_on(fd: int) -> Iterator[None]:
    """This process's fds 0-2 on fd for a while (what a restart inherits)."""
    saved = [os.dup(i) for i in range(3)]
    try:
        for i in range(3):
            os.dup2(fd, i)
        yield
    finally:
        for i, s in enumerate(saved):
            os.dup2(s, i)
            os.close(s)


def read_until(fd: int, want: int, timeout: float = 20.0) -> bytes:
    """Read a pty master until `want` lines came (or the timeout)."""
    out = b""
    end = time.monotonic() + timeout
    while out.count(b"\n") < want:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
    return out


def _ttys(image: Image) -> list:
    return [f for f in image.files.values() if f.kind == FileKind.TTY]


def test_tree_under_a_pty_keeps_its_session() -> None:
    """A session leader on a pty (its controlling terminal) with a child job
    in the foreground: restarted on another pty given as the restarter's
    stdio, the session, the groups, the controlling terminal and the
    foreground group are the same, and the tree writes to the new pty."""
    master, slave = os.openpty()
    master2, slave2 = os.openpty()

    def job(t: Member) -> None:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpid())  # this job has the foreground
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        t.fork(lambda t: None)  # a second task of the job
        t.report(role="job")

    def root(t: Member) -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for i in range(3):
            os.dup2(slave, i)
        os.close(slave)
        os.open("/dev/null", os.O_RDONLY)  # 3
        os.open("/dev/urandom", os.O_RDONLY | os.O_CLOEXEC)  # 4
        t.fork(job)

    set_subreaper(True)
    tree = spawn(root, pass_fds=(slave,))
    try:
        pids = tree.pids()
        job_pid = tree.role("job")["pid"]
        wait_for(lambda: os.tcgetpgrp(master) == job_pid)
        before, sess, parents = facts(pids), sessions(pids), ppids(pids)
        assert sess[0].ctty_fd == 0 and sess[0].foreground == pids.index(job_pid)
        image = pyckpt.checkpoint(pids[0]).image
        (t,) = _ttys(image)
        assert isinstance(t.extra, Tty)
        assert t.extra.flags == TtyFlag.TERMINAL | TtyFlag.CTTY
        assert (t.extra.sid, t.extra.pgrp) == (pids[0], job_pid)
        assert t.st_rdev == os.fstat(slave).st_rdev
        tree.kill()
        argv = ["sh", "-c", "echo restarted $$; exec sleep 1000"]
        with stdio_on(slave2):
            r = pyckpt.restart(image, argv=argv, release=False)
        with r:
            assert not r.warnings
            new = [r.pids[p] for p in pids]
            assert facts(new) == before
            assert ppids(new) == parents
            at_barrier = sessions(new)
            # the same groups and session; the leader took the new pty
            assert [(s.pgrp, s.sid, s.ctty_fd) for s in at_barrier] == [
                (s.pgrp, s.sid, s.ctty_fd) for s in sess
            ]
            assert ctty_of(new[0]) == os.fstat(slave2).st_rdev
            r.release()
            # the job takes the foreground back at release
            wait_for(lambda: sessions(new) == sess)
            out = read_until(master2, len(pids))
            assert out.count(b"restarted ") == len(pids), out
    finally:
        tree.kill()
        set_subreaper(False)
        for fd in (master, slave, master2, slave2):
            os.close(fd)


def test_pty_session_without_a_terminal_to_take() -> None:
    """--stdio null: the session is recreated without a controlling
    terminal, and restart says so instead of failing."""
    master, slave = os.openpty()

    def root(t: Member) -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for i in range(3):
            os.dup2(slave, i)
        os.close(slave)

    tree = spawn(root, pass_fds=(slave,))
    try:
        pids = tree.pids()
        image = pyckpt.checkpoint(pids[0]).image
        tree.kill()
        with pytest.warns(RuntimeWarning, match="without a controlling terminal"):
            r = pyckpt.restart(image, argv=SLEEP, release=False, stdio="null")
        with r:
            new = r.pids[pids[0]]
            assert sessions([new]) == [SessionFacts(0, 0, None, None)]
            null = os.stat("/dev/null").st_rdev
            for fd in range(3):
                assert os.stat(f"/proc/{new}/fd/{fd}").st_rdev == null
            # fds 0-2 shared one open file description: still one
            assert kcmp_file(new, 0, new, 1) and kcmp_file(new, 1, new, 2)
    finally:
        tree.kill()
        os.close(master)
        os.close(slave)


def test_sh_pipeline_with_data_in_flight() -> None:
    """sh -c '(echo ...; exec sleep) | sleep': sh and its two children, the
    pipe between them holding the producer's line, stdio on /dev/null."""

    def root(t: Member) -> None:
        null = os.open("/dev/null", os.O_RDWR)
        for i in range(3):
            os.dup2(null, i)
        os.close(null)
        script = "(echo produced; exec sleep 1000) | sleep 1000"
        os.execvp("sh", ["sh", "-c", script])

    tree = spawn(root)
    try:

        def settled() -> bool:
            pids = tree.pids()
            if len(pids) != 3:
                return False
            comms, calls = [], []
            for p in pids:
                with open(f"/proc/{p}/comm") as f:
                    comms.append(f.read().strip())
                with open(f"/proc/{p}/syscall") as f:
                    calls.append(f.read().split()[0])
            # sh done with its fds (waiting in wait4), each sleep done with
            # loading (in nanosleep: until then ld.so opens libraries)
            return (
                comms[1:] == ["sleep", "sleep"]
                and calls[0] == "61"
                and all(c in ("35", "230") for c in calls[1:])
            )

        wait_for(settled)
        pids = tree.pids()
        before, sess = facts(pids), sessions(pids)
        image = pyckpt.checkpoint(pids[0]).image
        assert not _ttys(image)
        assert {f.path for f in image.files.values() if f.kind == FileKind.CHR} == {
            "/dev/null"
        }
        with pyckpt.restart(image, argv=SLEEP, release=False) as r:
            new = [r.pids[p] for p in pids]
            assert facts(new) == before
            assert ppids(new) == ppids(pids)
            assert sessions(new) == sess
            data = facts(new, data=True)
            assert data == facts(pids, data=True)
            assert (b"produced\n",) in [f.extra for t in data for f in t.values()]
    finally:
        tree.kill()


def test_daemon_on_dev_null() -> None:
    """A daemon (double fork, setsid, stdio on /dev/null, /dev/zero open):
    its own session after restart, its devices reopened by path."""

    def daemon(t: Member) -> None:
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for i in range(3):
            os.dup2(null, i)
        os.close(null)
        os.open("/dev/zero", os.O_RDONLY)  # 3
        os.open("/dev/full", os.O_WRONLY | os.O_APPEND)  # 4
        t.report(role="daemon")

    def middle(t: Member) -> None:
        t.fork(daemon)
        t.report(role="middle")

    set_subreaper(True)
    tree = spawn(lambda t: t.fork(middle) and None)
    try:
        middle_pid = tree.role("middle")["pid"]
        pid = tree.role("daemon")["pid"]
        os.kill(middle_pid, signal.SIGKILL)  # the daemon's parent exits
        wait_for(lambda: psutil_ppid(pid) == os.getpid())
        before, sess = facts([pid]), sessions([pid])
        assert sess[0].sid == 0 and sess[0].ctty_fd is None
        image = pyckpt.checkpoint(pid).image
        assert {f.path for f in image.files.values()} == {
            "/dev/null",
            "/dev/zero",
            "/dev/full",
        }
        os.kill(pid, signal.SIGKILL)
        with pyckpt.restart(image, argv=SLEEP, release=False) as r:
            new = [r.pids[pid]]
            assert facts(new) == before
            assert sessions(new) == sess
    finally:
        tree.kill()
        set_subreaper(False)


def psutil_ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


_CONSOLES = ("/dev/vport", "/dev/hvc", "/dev/ttyS", "/dev/console")


def _find_console() -> int | None:
    """A copy of the open file the VM's console is, as vm/run.sh started
    the guest command (a virtio port): this process's fds 0-2, else an
    ancestor's fds 0-5 (run-tests.sh gives pytest another stdin).  None
    outside the VM."""
    pid = os.getpid()
    while pid > 1:
        for fd in range(6 if pid != os.getpid() else 3):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and link.startswith(_CONSOLES):
                if pid == os.getpid():
                    return os.dup(fd)
                pidfd = os.pidfd_open(pid)
                try:
                    return pidfd_getfd(pidfd, fd)
                finally:
                    os.close(pidfd)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rpartition(")")[2].split()[1])
    return None


@pytest.fixture
def console() -> Iterator[int]:
    fd = _find_console()
    if fd is None:
        pytest.skip("no VM console (virtio port) among this process's ancestors")
    try:
        yield fd
    finally:
        os.close(fd)


def _console_tree(console: int) -> Callable[[Member], None]:
    def root(t: Member) -> None:
        for i in range(3):
            os.dup2(console, i)
        os.close(console)
        t.fork(lambda t: None)  # a child inherits the console too

    return root


def test_tree_on_the_vm_console(console: int) -> None:
    """The issue's first case: a tree whose fds 0-2 are the console (a
    character device, no terminal) is saved as the tree's terminal and
    restarted on the restarter's stdio, or /dev/null, or a file."""
    tree = spawn(_console_tree(console), pass_fds=(console,))
    try:
        pids = tree.pids()
        before = facts(pids)
        image = pyckpt.checkpoint(pids[0]).image
        (t,) = _ttys(image)
        assert t.path.startswith("/dev/") and t.extra.flags == 0
        assert t.st_rdev == os.fstat(console).st_rdev
        # inherit: each fd 0-2 is exactly this process's own
        with pyckpt.restart(image, argv=SLEEP, release=False) as r:
            for p in pids:
                new = r.pids[p]
                for fd in range(3):
                    assert kcmp_file(new, fd, os.getpid(), fd)
            assert ppids([r.pids[p] for p in pids]) == ppids(pids)
        with pyckpt.restart(image, argv=SLEEP, release=False, stdio="null") as r:
            after = facts([r.pids[p] for p in pids])
            null = "chr /dev/null 1:3"
            assert after == [
                {
                    fd: dataclasses.replace(f, kind=null) if fd <= 2 else f
                    for fd, f in table.items()
                }
                for table in before
            ]
    finally:
        tree.kill()


def test_cli_stdio_file(console: int, capsys: pytest.CaptureFixture[str]) -> None:
    """pyckpt checkpoint, then pyckpt restart --stdio FILE (the CLI, run in
    this process: a Python start is seconds under TCG): the restarted
    tree's output lands in FILE (created 0600), its input is /dev/null."""
    tree = spawn(_console_tree(console), pass_fds=(console,))
    img = f"/tmp/user-trees-{os.getpid()}.img"
    out = f"/tmp/user-trees-{os.getpid()}.out"
    try:
        pid = tree.pids()[0]
        assert cli.main(["checkpoint", str(pid), "-o", img, "--kill"]) == 0
        script = "echo out; echo err >&2; read x || echo eof"
        cmd = ["restart", img, "--stdio", out]
        assert cli.main([*cmd, "--", "sh", "-c", script]) == 0

        def lines() -> list[str]:
            with open(out) as f:
                return sorted(f.read().splitlines())

        # two tasks ran the script (the child may end after the root)
        wait_for(lambda: len(lines()) >= 6)
        assert lines() == sorted(["out", "err", "eof"] * 2)
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        capsys.readouterr()
        assert cli.main([*cmd[:-1], "/dev/null", "--", "true"]) == 1
        assert "not a regular file" in capsys.readouterr().err
    finally:
        tree.kill()
        for p in (img, out):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def test_other_char_devices_need_device() -> None:
    """A character device that is neither a terminal on fds 0-2 nor a
    stateless one is refused, naming task, fd, path and rdev; --device
    saves it, and restart reopens it only when named there too."""

    def root(t: Member) -> None:
        os.open("/dev/kmsg", os.O_WRONLY)  # 0: stdio position
        os.open("/dev/null", os.O_RDONLY)  # 1
        os.open("/dev/null", os.O_RDONLY)  # 2
        os.open("/dev/kmsg", os.O_WRONLY)  # 3

    tree = spawn(root)
    try:
        pid = tree.pids()[0]
        kmsg = os.stat("/dev/kmsg").st_rdev
        rdev = f"{os.major(kmsg)}:{os.minor(kmsg)}"
        with pytest.raises(CheckpointError) as ei:
            pyckpt.checkpoint(pid)
        msg = str(ei.value)
        assert f"task {pid}" in msg and "fd 3" in msg
        assert "/dev/kmsg" in msg and f"rdev {rdev}" in msg
        image = pyckpt.checkpoint(pid, devices=["/dev/kmsg"]).image
        kf = [f for f in image.files.values() if f.path == "/dev/kmsg"]
        assert len(kf) == 2 and all(
            f.kind == FileKind.CHR and named_by_user(f) for f in kf
        )
        with pytest.raises(RestartError, match="--device /dev/kmsg"):
            pyckpt.restart(image, argv=SLEEP, release=False)
        before = facts([pid])
        with pyckpt.restart(
            image, argv=SLEEP, release=False, devices=["/dev/kmsg"]
        ) as r:
            assert facts([r.pids[pid]]) == before
        with pytest.raises(ValueError, match="not a character device"):
            pyckpt.checkpoint(pid, devices=["/tmp"])
    finally:
        tree.kill()


def test_stateless_device_checked_at_restart() -> None:
    """An image whose /dev/null names another device number is refused
    before anything is made."""

    def root(t: Member) -> None:
        os.open("/dev/null", os.O_RDWR)

    tree = spawn(root)
    try:
        image = pyckpt.checkpoint(tree.pids()[0]).image
        (f,) = image.files.values()
        f.st_rdev = os.makedev(1, 5)  # /dev/zero's
        with pytest.raises(RestartError, match="not one of the stateless"):
            pyckpt.restart(image, argv=SLEEP, release=False)
        f.path, f.st_rdev = "/dev/zero", os.makedev(1, 3)
        with pytest.raises(RestartError, match="not one of the stateless"):
            pyckpt.restart(image, argv=SLEEP, release=False)
    finally:
        tree.kill()
