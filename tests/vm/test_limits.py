"""Issue 19, "Lift a sandbox": what limits a task beyond its ids.

CKPT_IOC_TASK_CREDS (securebits and the capability sets, with TASK_FDS'
access check), the seccomp reader (ptrace seize, interrupt, get filter,
detach: the task left stopped or frozen as it was), and restart giving a
task back its bounding, inheritable and ambient sets, securebits,
no_new_privs and seccomp filters, or refusing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import trees
from vmhelpers import raises_errno

import pyckpt
from pyckpt import CkptError, Context, syscalls
from pyckpt.abi import ffi, lib, with_size
from pyckpt.errors import CheckpointError, RestartError
from pyckpt.proc import starttime
from pyckpt.proc import state as proc_state

CAP_NET_RAW = 13
CAP_NET_BIND_SERVICE = 10
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SETPCAP = 8
NOBODY = 65534
WAIT = 30.0

_libc = ctypes.CDLL(None, use_errno=True)


def status(pid: int | str) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def caps_of(pid: int | str) -> dict[str, int]:
    st = status(pid)
    return {
        k: int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    }


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# ---- a seccomp filter: one harmless syscall fails with EPERM ----------------

AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
NR_UNAME = 63
NR_GETPRIORITY = 140
PR_SET_SECCOMP = 22
SECCOMP_MODE_STRICT = 1
SECCOMP_MODE_FILTER = 2


def deny(nr: int, err: int = E.EPERM) -> bytes:
    """A filter: system call nr fails with err on x86_64, all else allowed."""
    insns = [
        (0x20, 0, 0, 4),  # ld [4]: arch
        (0x15, 0, 3, AUDIT_ARCH_X86_64),  # another arch: allow
        (0x20, 0, 0, 0),  # ld [0]: nr
        (0x15, 0, 1, nr),
        (0x06, 0, 0, SECCOMP_RET_ERRNO | err),
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(filt: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) of this thread."""
    buf = ctypes.create_string_buffer(filt, len(filt))
    prog = _Fprog(len(filt) // 8, ctypes.addressof(buf))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0):
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


# ---- a child whose limits the test chose -------------------------------------


@contextlib.contextmanager
def child(setup: Callable[[], None]) -> Iterator[tuple[int, int]]:
    """A forked child that ran setup() and waits: (pid, its securebits as
    it read them).  Killed at the end."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            setup()
            bits = syscalls.prctl(syscalls.PR_GET_SECUREBITS)
            os.write(w, f"{bits}\n".encode())
            os.close(w)
            while True:
                signal.pause()
        finally:
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            line = f.readline()
        assert line, "the child failed"
        yield pid, int(line)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _limited() -> None:
    """Inheritable NET_BIND_SERVICE and NET_RAW, NET_RAW and SYS_PTRACE out
    of the bounding set, NOROOT and NO_CAP_AMBIENT_RAISE after an ambient
    NET_BIND_SERVICE, as uid 65534 that kept its capabilities."""
    eff, prm, _ = syscalls.capget()
    inh = 1 << CAP_NET_BIND_SERVICE | 1 << CAP_NET_RAW
    syscalls.capset(eff, prm, inh)
    for cap in (CAP_NET_RAW, CAP_SYS_PTRACE):
        syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    syscalls.prctl(
        syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE
    )
    syscalls.capset(0, 1 << CAP_NET_BIND_SERVICE | 1 << CAP_SETPCAP, inh)
    syscalls.capset(1 << CAP_SETPCAP, 1 << CAP_NET_BIND_SERVICE | 1 << CAP_SETPCAP, inh)
    syscalls.prctl(
        syscalls.PR_SET_SECUREBITS,
        syscalls.SECBIT_NOROOT | syscalls.SECBIT_NO_CAP_AMBIENT_RAISE,
    )


# ---- CKPT_IOC_TASK_CREDS --------------------------------------------------------


def test_version_says_task_creds(ctx: Context) -> None:
    assert ctx.version()[1] & lib.CKPT_FEATURE_TASK_CREDS


@pytest.mark.parametrize("setup", [lambda: None, _limited], ids=["root", "limited"])
def test_task_creds_are_what_proc_says(ctx: Context, setup) -> None:
    with child(setup) as (pid, bits):
        got = ctx.task_creds(pid, starttime(pid))
        want = caps_of(pid)
    assert got.securebits == bits
    assert (
        got.cap_inheritable,
        got.cap_permitted,
        got.cap_effective,
        got.cap_bset,
        got.cap_ambient,
    ) == (
        want["CapInh"],
        want["CapPrm"],
        want["CapEff"],
        want["CapBnd"],
        want["CapAmb"],
    )
    if setup is _limited:
        assert bits == syscalls.SECBIT_NOROOT | syscalls.SECBIT_NO_CAP_AMBIENT_RAISE
        assert got.cap_ambient == 1 << CAP_NET_BIND_SERVICE
        assert not got.cap_bset & (1 << CAP_NET_RAW | 1 << CAP_SYS_PTRACE)
    # nothing entered the context
    assert ctx.stats().nr_objs == 0


def test_task_creds_of_a_bad_task_is_esrch(ctx: Context) -> None:
    # the cases TASK_FDS refuses with ESRCH, refused alike
    with raises_errno(E.ESRCH, "CKPT_IOC_TASK_CREDS"):
        ctx.task_creds(2**22 + 1, 0)  # above PID_MAX_LIMIT: never a task
    with raises_errno(E.ESRCH):
        ctx.task_creds(2, starttime(2))  # kthreadd
    with raises_errno(E.ESRCH):
        ctx.task_creds(os.getpid(), starttime(os.getpid()) + 1)
    with raises_errno(E.ESRCH):
        ctx.task_creds(0, 0)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        start = starttime(pid)
        wait_for(lambda: proc_state(pid) == "Z", "the child to exit")
        for call in (ctx.task_creds, ctx.task_fds):
            with raises_errno(E.ESRCH):
                call(pid, start)
    finally:
        os.waitpid(pid, 0)


def _raw_creds(ctx: Context, size: int | None = None, tail: bytes = b"", **fields: int):
    """TASK_CREDS with the struct cut to size or grown by tail: (ret, buf)."""
    full = ffi.sizeof("struct ckpt_task_creds")
    size = full + len(tail) if size is None else size
    s = ffi.new("struct ckpt_task_creds *")
    for k, v in fields.items():
        setattr(s, k, v)
    buf = ffi.new("unsigned char[]", size)
    ffi.memmove(buf, s, min(size, full))
    if tail:
        ffi.memmove(buf + full, tail, len(tail))
    req = with_size(lib.CKPT_IOC_TASK_CREDS, size)
    return lib.ckpt_ioctl(ctx.fileno(), req, buf), buf


def test_task_creds_sizes(ctx: Context) -> None:
    me = {"pid": os.getpid(), "starttime": starttime(os.getpid())}
    full = ffi.sizeof("struct ckpt_task_creds")
    assert full == lib.CKPT_TASK_CREDS_SIZE_VER0
    assert _raw_creds(ctx, size=full - 8, **me)[0] == -E.EINVAL
    assert _raw_creds(ctx, tail=b"\0" * 7 + b"\1", **me)[0] == -E.E2BIG
    ret, buf = _raw_creds(ctx, tail=b"\0" * 16, **me)
    assert ret == 0
    out = ffi.cast("struct ckpt_task_creds *", buf)
    assert out.cap_bset == caps_of("self")["CapBnd"]
    assert bytes(ffi.buffer(buf)[full:]) == b"\0" * 16


@pytest.mark.parametrize(
    "bad",
    ["flags", "securebits", "__pad", "cap_inheritable", "cap_bset", "cap_ambient"],
)
def test_task_creds_inputs_must_be_zero(ctx: Context, bad: str) -> None:
    me = {"pid": os.getpid(), "starttime": starttime(os.getpid())}
    ret, _ = _raw_creds(ctx, **me, **{bad: 1})
    assert ret == -E.EINVAL
    assert ctx.errors()[-1].err == -E.EINVAL


def _drop_ptrace() -> None:
    eff, prm, inh = syscalls.capget()
    drop = ~(1 << CAP_SYS_PTRACE)
    syscalls.capset(eff & drop, prm & drop, inh & drop)


def _eperm(call: Callable[[], object]) -> int:
    try:
        call()
    except CkptError as e:
        return 0 if e.errno == E.EPERM else 2
    return 1


def test_task_creds_without_cap_sys_ptrace_is_refused(ctx: Context) -> None:
    with trees.child_holding() as pid:
        start = starttime(pid)

        def caller_lacks_it() -> int:
            _drop_ptrace()
            ctx.stats()  # the context itself still works
            return _eperm(lambda: ctx.task_creds(pid, start))

        def opener_lacks_it() -> int:
            _drop_ptrace()
            with Context() as c:
                return _eperm(lambda: c.task_creds(pid, start))

        assert trees.in_child(caller_lacks_it) == 0
        assert trees.in_child(opener_lacks_it) == 0
    assert ctx.errors() == []  # refused before anything, the log included


SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446


def _landlock_sandbox() -> None:
    """A new Landlock domain for this process (tests/vm/test_review.py):
    ptrace, and so TASK_FDS, is refused on a task outside it."""
    attr = ctypes.c_uint64(1)  # LANDLOCK_ACCESS_FS_EXECUTE, no rule
    rfd = _libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), 8, 0
    )
    if rfd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        if _libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), rfd, 0) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(rfd)


def test_task_creds_refused_where_task_fds_is() -> None:
    # a root that an LSM (Landlock) keeps from the task: EPERM from both
    parent = os.getpid()
    start = starttime(parent)

    def sandboxed() -> int:
        _landlock_sandbox()
        with Context() as c:
            fds = _eperm(lambda: c.task_fds(parent, start))
            creds = _eperm(lambda: c.task_creds(parent, start))
            if fds == 1:
                return 10  # the LSM did not refuse: no proof here
            return 0 if (fds, creds) == (0, 0) else 20 + creds

    got = trees.in_child(sandboxed)
    assert got != 10, "Landlock did not refuse TASK_FDS: is it enabled?"
    assert got == 0, got


# ---- the seccomp reader ----------------------------------------------------------


def _filtered(*filters: bytes, nnp: bool = True) -> Callable[[], None]:
    def setup() -> None:
        if nnp:
            syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        for f in filters:
            install(f)

    return setup


def test_seccomp_filters_oldest_first() -> None:
    a, b = deny(NR_UNAME), deny(NR_GETPRIORITY, E.EACCES)
    with child(_filtered(a, b)) as (pid, _):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) == "T", "the child to stop")
        assert status(pid)["Seccomp"] == "2"
        assert syscalls.seccomp_filters(pid) == [a, b]
        # none: an empty list (the reader refuses nothing)
    with child(lambda: None) as (pid, _):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) == "T", "the child to stop")
        assert syscalls.seccomp_filters(pid) == []


def _busy_writer(w: int, filt: bytes) -> int:
    """A child writing to w as fast as it can, under a filter."""
    pid = os.fork()
    if pid == 0:
        try:
            _filtered(filt)()
            while True:
                with contextlib.suppress(BlockingIOError):  # full: spin on
                    os.write(w, b"x")
        finally:
            os._exit(1)
    return pid


def _drain(r: int) -> int:
    n = 0
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(r, 65536):
            n += len(chunk)
    return n


@contextlib.contextmanager
def _frozen_cgroup(pid: int) -> Iterator[str]:
    path = f"/sys/fs/cgroup/test-limits-{os.getpid()}-{pid}"
    os.mkdir(path)
    try:
        Path(path, "cgroup.procs").write_text(str(pid))
        Path(path, "cgroup.freeze").write_text("1")
        wait_for(
            lambda: "frozen 1" in Path(path, "cgroup.events").read_text().split("\n"),
            "the cgroup to freeze",
        )
        yield path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.rmdir(path)


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_seccomp_read_leaves_the_task_as_frozen(freezer: str) -> None:
    # a task that would write the moment it ran: after the read and the
    # detach it is stopped (or frozen) again and wrote nothing
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    filt = deny(NR_UNAME)
    pid = _busy_writer(w, filt)
    os.close(w)
    try:
        wait_for(lambda: status(pid)["Seccomp"] == "2", "the filter")
        if freezer == "signal":
            os.kill(pid, signal.SIGSTOP)
            wait_for(lambda: proc_state(pid) == "T", "the child to stop")
            frozen = contextlib.nullcontext("")
        else:
            frozen = _frozen_cgroup(pid)
        with frozen as cg:
            _drain(r)
            assert syscalls.seccomp_filters(pid) == [filt]
            if freezer == "signal":
                wait_for(lambda: proc_state(pid) == "T", "the child to stop again")
                # it is not traced any more, and its stop is its own
                assert status(pid)["TracerPid"] == "0"
            else:
                events = Path(cg, "cgroup.events")
                wait_for(lambda: "frozen 1" in events.read_text().split("\n"), "frozen")
                assert status(pid)["TracerPid"] == "0"
            assert _drain(r) == 0, "the task ran between the seize and the detach"
            # a second read works the same (nothing left behind by the first)
            assert syscalls.seccomp_filters(pid) == [filt]
            assert _drain(r) == 0
        if freezer == "signal":
            os.kill(
                pid, signal.SIGCONT
            )  # it does run again: the check above means something
            wait_for(lambda: _drain(r) > 0, "the writer to run")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os.close(r)


@contextlib.contextmanager
def traced(pid: int) -> Iterator[int]:
    """Another tracer: a forked process seizes pid and holds it until the
    block ends; its pid."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    tracer = os.fork()
    if tracer == 0:
        try:
            if _libc.ptrace(0x4206, pid, 0, 0) != 0:  # PTRACE_SEIZE
                os._exit(2)
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        yield tracer
    finally:
        os.write(done_w, b"x")
        os.waitpid(tracer, 0)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)


def test_seccomp_read_of_a_traced_task_is_eperm() -> None:
    with child(_filtered(deny(NR_UNAME))) as (pid, _):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) == "T", "the child to stop")
        with traced(pid) as tracer:
            assert status(pid)["TracerPid"] == str(tracer)
            with pytest.raises(OSError) as exc:
                syscalls.seccomp_filters(pid)
            assert exc.value.errno == E.EPERM


# ---- restart gives each task its limits back ------------------------------------

# The program each tree runs (and restart runs again): it writes what the
# kernel says of it (its status, its securebits, what uname(2) gives) to
# argv[1], atomically, then sleeps.
REPORT = """
import ctypes, os, sys, time
try:
    os.uname()
    u = "ok"
except OSError as e:
    u = str(e.errno)
bits = ctypes.CDLL(None).prctl(27, 0, 0, 0, 0)  # PR_GET_SECUREBITS
with open("/proc/self/status") as f:
    st = f.read()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(st + f"Uname:\\t{u}\\nSecurebits:\\t{bits}\\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1000)
"""
PY = "/usr/bin/python3"
LIMIT_KEYS = (
    "Uid",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
    "Uname",
)


def _report(path: str) -> dict[str, str]:
    wait_for(lambda: os.path.exists(path), f"{path} to be written")
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    # KEEP_CAPS never survives an exec: not a limit restart could keep
    out["Securebits"] = str(int(out["Securebits"]) & ~syscalls.SECBIT_KEEP_CAPS)
    return {k: out[k] for k in (*LIMIT_KEYS, "Securebits") if k in out}


@pytest.fixture
def home() -> Iterator[str]:
    """A directory the trees may write to (their reports go there)."""
    d = tempfile.mkdtemp(prefix="limits.", dir="/var/tmp")
    os.chmod(d, 0o777)  # root under SECBIT_NOROOT writes there too
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as(
    uid: int,
    before: Callable[[], None] = lambda: None,
    after: Callable[[], None] = lambda: None,
) -> Callable[[], None]:
    """A preexec_fn: before() as root, then ids uid, then after()."""

    def preexec() -> None:
        before()
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        after()

    return preexec


def _tree(home: str, preexec: Callable[[], None]) -> tuple[int, str, subprocess.Popen]:
    out = os.path.join(home, "report")
    p = subprocess.Popen(
        [PY, "-c", REPORT, out],
        preexec_fn=preexec,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=home,
    )
    return p.pid, out, p


def _round_trip(home: str, preexec: Callable[[], None]) -> tuple[dict, dict]:
    """The limits the program reported before the checkpoint and after
    the restart (root checkpoints with --kill and restarts, defaults)."""
    pid, out, p = _tree(home, preexec)
    try:
        before = _report(out)
        os.unlink(out)
        image = pyckpt.checkpoint(pid).image
    finally:
        os.killpg(pid, signal.SIGKILL)
        p.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # stdio notes
        r = pyckpt.restart(image, release=False)
    with r:
        r.release()
        after = _report(out)
    return before, after


def _drop_bset(*caps: int) -> Callable[[], None]:
    def drop() -> None:
        for cap in caps:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)

    return drop


def test_a_reduced_bounding_set_comes_back(home: str) -> None:
    # uid 65534 started with CAP_NET_RAW and CAP_SYS_ADMIN out of its
    # bounding set: a setuid or file-capability program it runs can never
    # get them.  Restarted, the same.
    before, after = _round_trip(
        home, _as(NOBODY, _drop_bset(CAP_NET_RAW, CAP_SYS_ADMIN))
    )
    assert not int(before["CapBnd"], 16) & (1 << CAP_NET_RAW | 1 << CAP_SYS_ADMIN)
    assert after == before


def _seccomp_nnp() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    install(deny(NR_UNAME))


def test_a_seccomp_filter_comes_back(home: str) -> None:
    # no_new_privs and a filter under which uname(2) fails with EPERM
    before, after = _round_trip(home, _as(NOBODY, after=_seccomp_nnp))
    assert before["Uname"] == str(E.EPERM) and before["Seccomp"] == "2"
    assert after == before


def test_a_filter_installed_by_root_for_a_user_comes_back(home: str) -> None:
    # no no_new_privs: root installed the filter, then became the user;
    # restart needs CAP_SYS_ADMIN to install it for uid 65534, and the
    # user's program still gets no capability
    before, after = _round_trip(
        home, _as(NOBODY, before=lambda: install(deny(NR_UNAME)))
    )
    assert before["NoNewPrivs"] == "0" and before["Uname"] == str(E.EPERM)
    assert after == before
    assert int(after["CapPrm"], 16) == int(after["CapEff"], 16) == 0


def _noroot() -> None:
    syscalls.prctl(
        syscalls.PR_SET_SECUREBITS,
        syscalls.SECBIT_NOROOT | syscalls.SECBIT_NOROOT_LOCKED,
    )


def test_root_under_secbit_noroot_stays_without_capabilities(home: str) -> None:
    # a root task whose exec gave it no capability (SECBIT_NOROOT, locked):
    # restart must not exec it as full root
    before, after = _round_trip(home, _noroot)
    assert before["Uid"].split() == ["0"] * 4
    assert int(before["CapPrm"], 16) == 0
    assert after == before


def _ambient() -> None:
    syscalls.prctl(
        syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE
    )


def _inheritable() -> None:
    eff, prm, _ = syscalls.capget()
    syscalls.capset(eff, prm, 1 << CAP_NET_BIND_SERVICE)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)


def test_an_ambient_capability_comes_back_and_no_more(home: str) -> None:
    before, after = _round_trip(home, _as(NOBODY, _inheritable, _ambient))
    nbs = 1 << CAP_NET_BIND_SERVICE
    assert int(before["CapAmb"], 16) == int(before["CapPrm"], 16) == nbs
    assert after == before


def test_seccomp_strict_mode_is_refused() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            syscalls.prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
            os.read(r, 1)  # read(2) is allowed: it waits here
        finally:
            os._exit(0)
    os.close(r)
    try:
        wait_for(lambda: status(pid)["Seccomp"] == "1", "strict mode")
        with pytest.raises(CheckpointError, match="strict"):
            pyckpt.checkpoint(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(w)


def test_a_task_traced_by_another_is_refused_not_dropped(home: str) -> None:
    pid, out, p = _tree(home, _as(NOBODY, after=_seccomp_nnp))
    try:
        with traced(pid) as tracer:
            _report(out)
            with pytest.raises(CheckpointError, match="traced by"):
                pyckpt.checkpoint(pid)
            assert status(pid)["TracerPid"] == str(tracer)  # left as it was
    finally:
        os.killpg(pid, signal.SIGKILL)
        p.wait()


def test_an_lsm_label_that_cannot_be_set_is_refused(home: str) -> None:
    # a label restart cannot give the exec (no such profile, or no LSM that
    # takes one): refused before any task runs, nothing left behind
    pid, out, p = _tree(home, _as(NOBODY))
    try:
        _report(out)
        image = pyckpt.checkpoint(pid).image
    finally:
        os.killpg(pid, signal.SIGKILL)
        p.wait()
    image.tasks[0].label = "pyckpt-no-such-profile (enforce)"
    mine = {c.pid for c in psutil.Process().children()}
    with pytest.raises(RestartError, match="label"):
        pyckpt.restart(image, release=False)
    assert {c.pid for c in psutil.Process().children()} <= mine
