"""Issue 18, section 2: the findings of a review of the module, one test each.

Each test here failed against the module before its fix (the commit that
added it says how): access that skipped the LSMs' ptrace hooks, FETCH that
could close an fd it had installed, CONTAINED that lost its output with a
grown struct, nsfs files and pidfds reported as regular files, DETAIL
sleeping on locks the tree holds, STATS showing the hash geometry of kernel
addresses and other users' counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import mmap
import os
import select
import signal
import threading
import time
from collections.abc import Callable

import pytest
import trees
from vmhelpers import Fds, raises_errno

from pyckpt import CkptError, Context, ObjType
from pyckpt.abi import FileKind, ffi, lib, with_size
from pyckpt.proc import starttime
from pyckpt.syscalls import pidfd_getfd

E = errno
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(nr: int, *args: int | ctypes.Array | ctypes.c_void_p) -> int:
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        raise OSError(ctypes.get_errno(), f"syscall {nr}")
    return ret


# ---- 1. access through the LSMs: a Landlock domain -------------------------

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_ACCESS_FS_EXECUTE = 1


def _landlock_sandbox() -> None:
    """Enter a new Landlock domain (this process only).  Landlock scopes
    ptrace to the domain: a sandboxed task cannot ptrace (or pidfd_getfd)
    one outside it, whatever its capabilities.  The ruleset must handle
    some access: execute, with no rule, so nothing can be exec'ed."""
    attr = ctypes.c_uint64(LANDLOCK_ACCESS_FS_EXECUTE)
    rfd = _syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), 8, 0)
    try:
        _syscall(SYS_LANDLOCK_RESTRICT_SELF, rfd, 0)
    finally:
        os.close(rfd)


def _walk(ctx: Context, pid: int) -> int:
    """TASK_FDS of pid: 0 if allowed, else the errno."""
    try:
        ctx.task_fds(pid, starttime(pid))
    except CkptError as e:
        return e.errno
    return 0


def test_landlock_refuses_pidfd_getfd_and_task_fds_alike(pipe) -> None:
    # a root that Landlock keeps from pidfd_getfd() on a task outside its
    # domain (this test process) gets nothing from TASK_FDS either
    r, _ = pipe()
    parent = os.getpid()
    pidfd = os.pidfd_open(parent)

    def child() -> int:
        _landlock_sandbox()
        try:
            os.close(pidfd_getfd(pidfd, r))
            return 10  # the LSM did not refuse: no proof here
        except OSError as e:
            if e.errno != E.EPERM:
                return 11
        with Context() as ctx:
            err = _walk(ctx, parent)
            if err != E.EPERM:
                return 12 if err == 0 else 13
            return 0 if ctx.stats().nr_objs == 0 else 14

    try:
        got = trees.in_child(child)
    finally:
        os.close(pidfd)
    assert got != 10, "Landlock did not refuse pidfd_getfd(): is it enabled?"
    assert got != 12, "TASK_FDS walked a task pidfd_getfd() was refused"
    assert got == 0, got


def test_landlock_allows_a_walk_inside_the_domain() -> None:
    # the check is ptrace's: a sandboxed root may walk its own children
    def child() -> int:
        _landlock_sandbox()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # until the parent is done
            os._exit(0)
        os.close(r)
        try:
            with Context() as ctx:
                fds = ctx.task_fds(pid, starttime(pid))
                return 0 if fds else 20
        except CkptError as e:
            return 21 if e.errno == E.EPERM else 22
        finally:
            os.close(w)
            os.waitpid(pid, 0)

    assert trees.in_child(child) == 0


def _walked_ctx(spawn: Callable[..., trees.Tree], fds: Fds) -> tuple[Context, int]:
    """A context that walked a tree's root; the root's pipe end is also
    held here, so CONTAINED finds a leak (and logs it)."""
    r, w = os.pipe()
    fds.add(r, w)
    root = spawn(lambda m: None, pass_fds=(r,)).root
    ctx = Context()
    walked = ctx.task_fds(root, starttime(root))
    objref = next(e.objref for e in walked if e.fd == r)
    return ctx, objref


def test_a_walked_context_is_refused_to_a_sandboxed_holder(spawn, fds: Fds) -> None:
    # The holder has the opener's ids and capabilities (before: enough), but
    # Landlock keeps it from the walked task: FETCH, CONTAINED and ERRORS
    # would hand it what TASK_FDS would refuse.
    ctx, objref = _walked_ctx(spawn, fds)

    def child() -> int:
        _landlock_sandbox()
        refused = 0
        calls = (
            lambda: os.close(ctx.fetch(objref)),
            ctx.contained,
            ctx.errors,
            ctx.stats,
        )
        for call in calls:
            try:
                call()
            except CkptError as e:
                refused += e.errno == E.EPERM
        return 0 if refused == len(calls) else 30 + refused

    try:
        assert trees.in_child(child) == 0
        # the walker itself keeps its context
        os.close(ctx.fetch(objref))
    finally:
        ctx.close()


def test_a_walked_context_stays_usable_by_a_forked_holder(spawn, fds: Fds) -> None:
    # same ids, capabilities and domain, another struct cred: the ptrace
    # check of each walked task is run again, and passes
    ctx, objref = _walked_ctx(spawn, fds)

    def child() -> int:
        os.setgroups(os.getgroups())  # a struct cred of its own
        os.close(ctx.fetch(objref))
        return 0 if ctx.stats().nr_objs else 40

    try:
        assert trees.in_child(child) == 0
    finally:
        ctx.close()


# ---- 2. FETCH returns its fd; nothing installed is ever closed --------------


def test_fetch_returns_the_new_fd(ctx: Context, pipe, fds: Fds) -> None:
    # as pidfd_getfd() does: the fd is the ioctl's value, and no write back
    # can fail after it was installed
    r, _ = pipe()
    ctx.insert(1, r)
    arg = ffi.new("struct ckpt_obj_arg *")
    arg.type = ObjType.FILE
    arg.objref = 1
    fd = ctx.ioctl(lib.CKPT_IOC_FETCH, arg)
    assert fd > 0, "FETCH returned no fd"
    fds.add(fd)
    assert os.stat(fd) == os.stat(r)
    assert arg.handle == 0  # the struct is input only


# ---- 3. CONTAINED with a grown struct ---------------------------------------


def test_contained_with_a_grown_struct_writes_its_output(
    ctx: Context, fds: Fds
) -> None:
    r, w = os.pipe()
    fds.add(r, w)
    fds.add(os.dup(r))  # a holder outside what lookup_add met
    ctx.lookup_add(r)
    size = ffi.sizeof("struct ckpt_contained")
    raw = ffi.new("char[]", size + 8)
    c = ffi.cast("struct ckpt_contained *", raw)
    leaks = ffi.new("struct ckpt_leak[]", 4)
    c.buf = int(ffi.cast("uintptr_t", leaks))
    c.count = 4
    req = with_size(lib.CKPT_IOC_CONTAINED, size + 8)
    with raises_errno(E.EBUSY):
        ctx.ioctl(req, c)
    # the file (a second fd on it) and the pipe's inode (its write end)
    assert (c.count, c.total) == (2, 2)
    assert sorted(leaks[i].objref for i in range(2)) == [1, 2]


# ---- 4. nsfs files and pidfds are not regular files --------------------------


def test_an_nsfs_file_is_not_regular(ctx: Context, fds: Fds) -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    fds.add(fd)
    kind = ctx.lookup_add(fd).file.kind
    assert kind not in (FileKind.REG, FileKind.ANON), kind.name
    assert kind == FileKind.NSFS


def test_a_pidfd_is_not_regular(ctx: Context, fds: Fds) -> None:
    # pidfs inodes are S_IFREG since 6.9; 6.1's pidfds are anon inodes
    fd = os.pidfd_open(os.getpid())
    fds.add(fd)
    kind = ctx.lookup_add(fd).file.kind
    assert kind not in (FileKind.REG, FileKind.ANON), kind.name
    assert kind == FileKind.PIDFD


def test_walked_nsfs_and_pidfd_kinds(ctx: Context, spawn, fds: Fds) -> None:
    ns = os.open("/proc/self/ns/uts", os.O_RDONLY)
    pidfd = os.pidfd_open(os.getpid())
    fds.add(ns, pidfd)
    root = spawn(lambda m: None, pass_fds=(ns, pidfd)).root
    got = {e.fd: e.file.kind for e in ctx.task_fds(root, starttime(root)) if e.first}
    assert (got[ns], got[pidfd]) == (FileKind.NSFS, FileKind.PIDFD)


# ---- 5. DETAIL does not sleep on locks the tree holds -------------------------

SYS_USERFAULTFD = 323
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register)
UFFDIO_REGISTER_MODE_MISSING = 1


class _Stall:
    """A page whose first touch blocks: userfaultfd with no handler.  A
    syscall copying from (or to) it in the kernel sleeps there, killably,
    holding whatever lock it took before the copy."""

    def __init__(self) -> None:
        self.uffd = _syscall(SYS_USERFAULTFD, os.O_CLOEXEC)
        api = (ctypes.c_uint64 * 3)(UFFD_API, 0, 0)
        if _libc.ioctl(self.uffd, ctypes.c_ulong(UFFDIO_API), api) < 0:
            raise OSError(ctypes.get_errno(), "UFFDIO_API")
        self.map = mmap.mmap(-1, mmap.PAGESIZE)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        # the page is still missing: mmap() does not touch it
        reg = (ctypes.c_uint64 * 4)(
            self.addr, mmap.PAGESIZE, UFFDIO_REGISTER_MODE_MISSING, 0
        )
        if _libc.ioctl(self.uffd, ctypes.c_ulong(UFFDIO_REGISTER), reg) < 0:
            raise OSError(ctypes.get_errno(), "UFFDIO_REGISTER")


def _kernel_stack(tid: int) -> str:
    try:
        with open(f"/proc/{tid}/stack") as f:
            return f.read()
    except OSError:
        return ""


def _state(path: str) -> str:
    try:
        with open(f"{path}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return ""


Holder = Callable[[_Stall], tuple[tuple[int, ...], Callable[[], object]]]


def _stalled_holder(stall: Holder) -> tuple[int, list[int]]:
    """Fork a process that makes its files, reports their fds, then calls
    into the kernel in a way that stalls on the page with a lock held.
    Returns its pid (stalled) and the fds it reported."""
    try:
        os.close(_Stall().uffd)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        pytest.skip(
            "this kernel has no userfaultfd (CONFIG_USERFAULTFD): no way to stall a lock holder"
        )
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            s = _Stall()
            fds, call = stall(s)
            os.write(w, repr(list(fds)).encode())
            os.close(w)
            call()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    while "handle_userfault" not in _kernel_stack(pid):
        if _state(f"/proc/{pid}") in ("", "Z"):
            pytest.fail(f"the holder never stalled: {out!r}")
        time.sleep(0.05)
    return pid, eval(out.decode())


def _walk_beside(pid: int) -> tuple[bool, list[int]]:
    """TASK_FDS DETAIL of the stalled holder, from a thread; the fds it
    reports BUSY.  A walk that sleeps on the held lock (the bug) is seen
    asleep in the module 10 times in a row; the holder is then killed,
    which lets the lock go, so that the test ends either way."""
    out: list[object] = []

    def walk() -> None:
        try:
            with Context() as ctx:
                out.append(ctx.task_fds(pid, starttime(pid)))
        except BaseException as e:  # noqa: BLE001
            out.append(e)

    t = threading.Thread(target=walk, daemon=True)
    t.start()
    slept, asleep = False, 0
    while t.is_alive():
        task = f"/proc/self/task/{t.native_id}"
        if _state(task) == "D" and "[ckpt]" in _kernel_stack(t.native_id):
            asleep += 1
        else:
            asleep = 0
        if asleep >= 10 and not slept:
            slept = True
            os.kill(pid, signal.SIGKILL)
        t.join(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    (res,) = out
    if isinstance(res, BaseException):
        return slept, [-1]
    return slept, sorted(e.fd for e in res if e.first and e.busy)


def test_a_pipe_locked_by_a_stalled_writer_is_busy() -> None:
    # a write(2) from the stalled page takes the pipe's mutex, then faults
    def stall(s: _Stall) -> tuple[tuple[int, ...], Callable[[], object]]:
        r, w = os.pipe()
        return (r, w), lambda: os.write(w, memoryview(s.map))

    pid, fds = _stalled_holder(stall)
    slept, busy = _walk_beside(pid)
    assert not slept, "DETAIL slept on the pipe's mutex"
    assert busy == sorted(fds)


def test_an_epoll_locked_by_a_stalled_wait_is_busy() -> None:
    # epoll_wait() copies the ready events out holding the epoll's mutex
    def stall(s: _Stall) -> tuple[tuple[int, ...], Callable[[], object]]:
        ep = select.epoll()
        _r, w = os.pipe()  # the read end stays open: w stays writable
        ep.register(w, select.EPOLLOUT)
        wait = _libc.epoll_wait
        return (ep.fileno(),), lambda: wait(ep.fileno(), ctypes.c_void_p(s.addr), 1, -1)

    pid, fds = _stalled_holder(stall)
    slept, busy = _walk_beside(pid)
    assert not slept, "DETAIL slept on the epoll's mutex"
    assert busy == fds


# ---- 6. STATS: no hash geometry of kernel addresses, no others' counts -------


def test_the_hash_is_seeded_per_context(
    make_ctx: Callable[..., Context], fds: Fds
) -> None:
    # The same files in contexts of 2 buckets: unseeded, hash_ptr() puts
    # them in the same buckets every time, and max_chain and probes tell
    # the caller about the kernel's addresses.
    ends = []
    for _ in range(2):
        r, w = os.pipe()
        fds.add(r, w)
        ends.append(r)
    shapes = set()
    for _ in range(32):
        c = make_ctx(hash_bits=1)
        c.lookup_add_many(ends)
        c.lookup_add_many(ends)
        st = c.stats()
        shapes.add((st.max_chain, st.probes))
        c.close()
    assert len(shapes) > 1, f"32 contexts, one geometry: {shapes}"


def _keep_only_checkpoint_restore() -> None:
    """capset(2): CAP_CHECKPOINT_RESTORE (40) alone, no CAP_SYS_ADMIN."""
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    bit = 1 << (40 - 32)
    data = (ctypes.c_uint32 * 6)(0, 0, 0, bit, bit, 0)
    if _libc.syscall(ctypes.c_long(126), hdr, data) != 0:  # SYS_capset
        raise OSError(ctypes.get_errno(), "capset")


def test_module_wide_stats_need_cap_sys_admin(observer: Context) -> None:
    assert observer.stats().mod_contexts >= 1  # root sees them

    def child() -> int:
        _keep_only_checkpoint_restore()
        with Context() as c:
            st = c.stats()
        mod = [v for k, v in dataclasses.asdict(st).items() if k.startswith("mod_")]
        return 0 if not any(mod) else 50

    assert trees.in_child(child) == 0, "module-wide counts shown without CAP_SYS_ADMIN"
