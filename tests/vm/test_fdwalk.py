"""CKPT_IOC_TASK_FDS: the module walks a task's fd table in one ioctl.

The target is a forked child of the test holding a known mix of fds (a pipe
with a dup'ed end, close-on-exec or not, a regular file, /dev/null, a
socket pair) besides what pytest has open; it closes its inherited /dev/ckpt
fds (an fd on a context is refused, EBADF) and waits, so its table is still.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest
import trees
from vmhelpers import fail_fired, mod_counts, raises_errno, write_param

from pyckpt import CkptError, Context, device, proc
from pyckpt.abi import ffi, lib
from pyckpt.syscalls import pidfd_getfd

CAP_SYS_PTRACE = 19


def _fdinfo_cloexec(pid: int, fd: int) -> bool:
    for line in proc.read_text(f"/proc/{pid}/fdinfo/{fd}").splitlines():
        if line.startswith("flags:"):
            return bool(int(line.split()[1], 8) & os.O_CLOEXEC)
    raise AssertionError(f"no flags in fdinfo of {pid}/{fd}")


@contextlib.contextmanager
def _target() -> Iterator[int]:
    """A child with a known mix of fds, waiting until the test is done."""
    keep: list[int] = []
    r, w = os.pipe2(os.O_CLOEXEC)
    keep += [r, w, os.dup(r)]  # dup: one file on two fds, not close-on-exec
    tmp = tempfile.TemporaryFile()  # noqa: SIM115
    tmp.write(b"x" * 1234)
    tmp.flush()
    keep.append(os.open(os.devnull, os.O_RDWR))
    a, b = socket.socketpair()
    try:
        with trees.child_holding() as pid:
            yield pid
    finally:
        for fd in keep:
            os.close(fd)
        tmp.close()
        a.close()
        b.close()


@pytest.fixture
def target() -> Iterator[int]:
    with _target() as pid:
        yield pid


def _proc_fds(pid: int) -> list[int]:
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def test_walk_agrees_with_proc(ctx: Context, target: int) -> None:
    walk = ctx.task_fds(target, proc.starttime(target))
    assert [e.fd for e in walk] == _proc_fds(target)
    for e in walk:
        assert e.cloexec == _fdinfo_cloexec(target, e.fd), e
    # one first per distinct objref, at its lowest fd, and only then a FileInfo
    seen: set[int] = set()
    for e in walk:
        assert e.first == (e.objref not in seen), e
        assert (e.file is not None) == e.first
        seen.add(e.objref)
    assert ctx.stats().nr_objs >= len(seen)
    # the dup'ed pipe end shares its file: two fds, one objref
    assert len(seen) < len(walk)


def test_identity_is_what_stat_says(ctx: Context, target: int) -> None:
    kinds = set()
    for e in ctx.task_fds(target, proc.starttime(target)):
        if not e.first:
            continue
        assert e.file is not None
        st = os.stat(f"/proc/{target}/fd/{e.fd}")
        got = e.file
        assert (
            got.st_dev,
            got.st_ino,
            got.st_nlink,
            got.st_rdev,
            got.st_mode,
            got.st_uid,
            got.st_gid,
            got.st_size,
        ) == (
            st.st_dev,
            st.st_ino,
            st.st_nlink,
            st.st_rdev,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
        ), e.fd
        kinds.add(got.kind.name)
    assert {"PIPE", "REG", "CHR", "SOCK"} <= kinds


def test_walk_agrees_with_lookup_add_of_copies(make_ctx, target: int) -> None:
    walk = make_ctx().task_fds(target, proc.starttime(target))
    other = make_ctx()
    pidfd = os.pidfd_open(target)
    copies = []
    try:
        copies = [pidfd_getfd(pidfd, e.fd) for e in walk]
        added = other.lookup_add_many(copies)
    finally:
        for fd in (*copies, pidfd):
            os.close(fd)
    assert [(e.objref, e.first, e.file) for e in walk] == [
        (a.objref, a.first, a.file) for a in added
    ]


def test_lookup_add_fills_the_identity_too(ctx: Context, fds) -> None:
    fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    fds.add(fd)
    info = ctx.lookup_add(fd).file
    st = os.fstat(fd)
    assert info is not None
    assert (info.st_dev, info.st_ino, info.st_mode, info.st_size) == (
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_size,
    )


def test_second_walk_meets_nothing_new(ctx: Context, target: int) -> None:
    start = proc.starttime(target)
    first = ctx.task_fds(target, start)
    nr = ctx.stats().nr_objs
    again = ctx.task_fds(target, start)
    assert [(e.fd, e.objref, e.cloexec) for e in again] == [
        (e.fd, e.objref, e.cloexec) for e in first
    ]
    assert not any(e.first or e.file for e in again)
    assert ctx.stats().nr_objs == nr


def test_batch_of_one_resumes_over_every_fd(make_ctx, target: int, monkeypatch) -> None:
    start = proc.starttime(target)
    whole = make_ctx().task_fds(target, start)
    calls = 0
    real = device._ioctl

    def counting(fd: int, req: int, arg) -> int:
        nonlocal calls
        calls += req == lib.CKPT_IOC_TASK_FDS
        return real(fd, req, arg)

    monkeypatch.setattr(device, "_ioctl", counting)
    ones = make_ctx().task_fds(target, start, batch=1)
    assert ones == whole
    # one ioctl per fd, and one more that finds the end
    assert calls == len(whole) + 1


def test_another_start_time_is_refused(ctx: Context, target: int) -> None:
    with raises_errno(E.ESRCH, "CKPT_IOC_TASK_FDS") as exc:
        ctx.task_fds(target, proc.starttime(target) + 1)
    assert exc.value.results == []
    st = ctx.stats()
    assert (st.nr_objs, st.state) == (0, 0)


def test_no_task_kernel_thread_or_zombie(ctx: Context) -> None:
    with raises_errno(E.ESRCH):
        ctx.task_fds(2**22 + 1, 0)  # above PID_MAX_LIMIT: never a task
    with raises_errno(E.ESRCH) as exc:
        ctx.task_fds(2, proc.starttime(2))  # kthreadd
    # the header says nothing was walked (it once kept nr as given)
    assert exc.value.results == []
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        start = proc.starttime(pid)
        while proc.state(pid) != "Z":
            os.sched_yield()
        with raises_errno(E.ESRCH):  # exited: no files any more
            ctx.task_fds(pid, start)
    finally:
        os.waitpid(pid, 0)
    assert ctx.stats().nr_objs == 0


def test_an_fd_on_a_context_is_refused(ctx: Context) -> None:
    with pytest.raises(CkptError) as exc:
        ctx.task_fds(os.getpid(), proc.starttime(os.getpid()))
    assert exc.value.errno == E.EBADF
    # the fds before it were walked and say so
    assert all(e.fd < ctx.fileno() for e in exc.value.results)


def _drop_ptrace() -> None:
    """capset(2) without CAP_SYS_PTRACE (effective and permitted)."""
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    if libc.syscall(125, hdr, data) != 0:  # SYS_capget
        raise OSError(ctypes.get_errno(), "capget")
    data[0] &= ~(1 << CAP_SYS_PTRACE)  # effective, low word
    data[1] &= ~(1 << CAP_SYS_PTRACE)  # permitted, low word
    if libc.syscall(126, hdr, data) != 0:  # SYS_capset
        raise OSError(ctypes.get_errno(), "capset")


def _eperm(call) -> int:
    try:
        call()
    except CkptError as e:
        return 0 if e.errno == E.EPERM else 2
    return 1


def test_without_cap_sys_ptrace_is_refused(ctx: Context, target: int) -> None:
    start = proc.starttime(target)

    def caller_lacks_it() -> int:
        _drop_ptrace()
        # stats still works: CAP_SYS_ADMIN is enough for the context itself
        ctx.stats()
        return _eperm(lambda: ctx.task_fds(target, start))

    def opener_lacks_it() -> int:
        _drop_ptrace()
        with Context() as c:
            return _eperm(lambda: c.task_fds(target, start))

    assert trees.in_child(caller_lacks_it) == 0
    assert trees.in_child(opener_lacks_it) == 0
    # refused before anything: no object, no error-log entry
    assert ctx.stats().nr_objs == 0
    assert ctx.errors() == []


def test_restart_or_released_context_is_refused(make_ctx, target: int, fds) -> None:
    start = proc.starttime(target)
    restart = make_ctx()
    r, w = os.pipe2(os.O_CLOEXEC)
    fds.add(r, w)
    restart.insert(1, r)
    with raises_errno(E.EINVAL):
        restart.task_fds(target, start)
    released = make_ctx()
    released.release()
    with raises_errno(E.EINVAL):
        released.task_fds(target, start)


def _raw(ctx: Context, **fields: int) -> tuple[int, object]:
    arg = ffi.new("struct ckpt_task_fds *")
    for k, v in fields.items():
        setattr(arg, k, v)
    return lib.ckpt_ioctl(ctx.fileno(), lib.CKPT_IOC_TASK_FDS, arg), arg


@pytest.mark.parametrize(
    "bad",
    [
        {"flags": lib.CKPT_TASK_FDS_DETAIL << 1},  # unknown (DETAIL is 1)
        {"nr": 0},
        {"nr": lib.CKPT_BATCH_MAX + 1},
        {"next_fd": -1},
    ],
    ids=["flags", "nr0", "nr_max", "next_fd"],
)
def test_bad_arguments(ctx: Context, target: int, bad: dict[str, int]) -> None:
    entries = ffi.new("struct ckpt_fd_entry[]", 4)
    fields = {
        "pid": target,
        "starttime": proc.starttime(target),
        "nr": 4,
        "entries": int(ffi.cast("uintptr_t", entries)),
    }
    ret, _ = _raw(ctx, **{**fields, **bad})
    assert ret == -E.EINVAL
    assert ctx.stats().nr_objs == 0


def test_unwritable_entries(observer: Context, target: int) -> None:
    before = mod_counts(observer)
    with Context() as ctx:
        ret, arg = _raw(
            ctx, pid=target, starttime=proc.starttime(target), nr=8, entries=8
        )
        assert ret == -E.EFAULT
        # the fd whose entry failed was undone: nothing was added
        assert (arg.nr, ctx.stats().nr_objs) == (0, 0)
        assert arg.next_fd == min(_proc_fds(target))
    assert mod_counts(observer) == before


def test_every_forced_failure_is_clean(observer: Context, target: int) -> None:
    # fail_nth (test_faults.py's knob): the Nth allocation, getattr or user
    # copy of the next ioctl fails.  The walk stops there: the entries before
    # stay (their files in the hash), the failing fd is undone, a second walk
    # completes the fault-free result, and closing frees everything.
    start = proc.starttime(target)
    base = mod_counts(observer)
    with Context() as c:
        expected = c.task_fds(target, start)
    forced = 0
    for n in range(1, 1000):
        with Context() as c:
            fired = fail_fired()
            write_param("fail_nth", n)
            try:
                got, err = c.task_fds(target, start), None
            except CkptError as e:
                got, err = None, e
            finally:
                write_param("fail_nth", 0)
            if fail_fired() == fired:
                assert err is None and got == expected
                break
            forced += 1
            assert err is not None, f"failure {n} went unreported"
            assert err.errno in (E.ENOMEM, E.EFAULT), f"failure {n}: {err}"
            done = err.results
            assert done == expected[: len(done)], f"failure {n}"
            firsts = [e for e in done if e.first]
            inodes = {e.file.inode_objref for e in firsts if e.file}
            assert c.stats().nr_objs == len(firsts) + len(inodes), f"failure {n}"
            again = c.task_fds(target, start)
            met = {e.objref for e in firsts}
            assert [(e.fd, e.objref, e.cloexec) for e in again] == [
                (e.fd, e.objref, e.cloexec) for e in expected
            ]
            assert [e.first for e in again] == [
                e.first and e.objref not in met for e in expected
            ]
        assert mod_counts(observer) == base, f"failure {n}: leak"
    else:
        raise AssertionError("the walk does not end")
    # the header, then per first fd: its hash entry, getattr, inode, its copy
    assert forced >= 1 + 4
