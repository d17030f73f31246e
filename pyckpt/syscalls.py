"""The system calls Python's os module lacks, for checkpoint, restart, the
kinds, the tools and the tests: thin typed wrappers over C helpers compiled
into pyckpt._ckpt (cffi_build.py's HELPERS_SRC), the one way pyckpt reaches
libc beyond the os module (neither a foreign-function library nor cffi ABI mode).

Each helper returns -errno on failure, read in C right after the call (no
errno race with the interpreter); a failure raises OSError with that errno.
Structs (itimerspec, statfs, the kernel's 8-byte sigset, kcmp's epoll slot)
and constants come from the libc and kernel headers, never from Python.
"""

from __future__ import annotations

import os

from pyckpt._ckpt import ffi, lib

__all__ = [
    "PR_CAPBSET_DROP",
    "PR_CAPBSET_READ",
    "PR_CAP_AMBIENT",
    "PR_CAP_AMBIENT_CLEAR_ALL",
    "PR_CAP_AMBIENT_IS_SET",
    "PR_CAP_AMBIENT_RAISE",
    "PR_GET_DUMPABLE",
    "PR_GET_KEEPCAPS",
    "PR_GET_NO_NEW_PRIVS",
    "PR_GET_SECUREBITS",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_KEEPCAPS",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "PR_SET_SECUREBITS",
    "SECBIT_KEEP_CAPS",
    "SECBIT_KEEP_CAPS_LOCKED",
    "SECBIT_NOROOT",
    "SECBIT_NOROOT_LOCKED",
    "SECBIT_NO_CAP_AMBIENT_RAISE",
    "SECBIT_NO_SETUID_FIXUP",
    "capget",
    "capset",
    "clock_gettime_ns",
    "epoll_add",
    "fstatfs_type",
    "kcmp_epoll_tfd",
    "kcmp_file",
    "kcmp_files",
    "pidfd_getfd",
    "prctl",
    "seccomp_execve",
    "seccomp_filters",
    "setfsgid",
    "setfsuid",
    "signalfd",
    "tee",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_set_ticks",
    "timerfd_settime",
]

# <sys/prctl.h>: the options restart, the tools and the tests use
PR_SET_PDEATHSIG: int = lib.PR_SET_PDEATHSIG
PR_SET_DUMPABLE: int = lib.PR_SET_DUMPABLE
PR_GET_DUMPABLE: int = lib.PR_GET_DUMPABLE
PR_SET_CHILD_SUBREAPER: int = lib.PR_SET_CHILD_SUBREAPER
PR_SET_NO_NEW_PRIVS: int = lib.PR_SET_NO_NEW_PRIVS
PR_GET_NO_NEW_PRIVS: int = lib.PR_GET_NO_NEW_PRIVS
PR_GET_KEEPCAPS: int = lib.PR_GET_KEEPCAPS
PR_SET_KEEPCAPS: int = lib.PR_SET_KEEPCAPS
PR_CAPBSET_READ: int = lib.PR_CAPBSET_READ
PR_CAPBSET_DROP: int = lib.PR_CAPBSET_DROP
PR_GET_SECUREBITS: int = lib.PR_GET_SECUREBITS
PR_SET_SECUREBITS: int = lib.PR_SET_SECUREBITS
PR_CAP_AMBIENT: int = lib.PR_CAP_AMBIENT
PR_CAP_AMBIENT_IS_SET: int = lib.PR_CAP_AMBIENT_IS_SET
PR_CAP_AMBIENT_RAISE: int = lib.PR_CAP_AMBIENT_RAISE
PR_CAP_AMBIENT_CLEAR_ALL: int = lib.PR_CAP_AMBIENT_CLEAR_ALL
# <linux/securebits.h>
SECBIT_NOROOT: int = lib.SECBIT_NOROOT
SECBIT_NOROOT_LOCKED: int = lib.SECBIT_NOROOT_LOCKED
SECBIT_NO_SETUID_FIXUP: int = lib.SECBIT_NO_SETUID_FIXUP
SECBIT_KEEP_CAPS: int = lib.SECBIT_KEEP_CAPS
SECBIT_KEEP_CAPS_LOCKED: int = lib.SECBIT_KEEP_CAPS_LOCKED
SECBIT_NO_CAP_AMBIENT_RAISE: int = lib.SECBIT_NO_CAP_AMBIENT_RAISE
_INSN: int = lib.SECCOMP_INSN_SIZE  # sizeof(struct sock_filter)
# a task's filters hold at most MAX_INSNS_PER_PATH (32768) instructions,
# each filter counting 4 more: these bound every chain the kernel accepts
_SECCOMP_ROOM = 32768 * _INSN
_SECCOMP_MAX = 32768 // 5


def _check(ret: int, what: str) -> int:
    """ret, or OSError(-ret) when it is a -errno."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


# ---- kcmp, pidfd_getfd, tee, epoll_ctl ---------------------------------------


def kcmp_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """kcmp(KCMP_FILE): do the two fds name the same open file description?"""
    return _check(lib.ckpt_kcmp(pid1, pid2, lib.KCMP_FILE, fd1, fd2), "kcmp") == 0


def kcmp_files(pid1: int, pid2: int) -> int:
    """kcmp(KCMP_FILES): 0 when the two tasks (or threads) share one fd
    table, else -1 or 1: a total order (the kernel's, on obfuscated
    pointers), so tasks can be sorted into groups sharing a table."""
    ret = _check(
        lib.ckpt_kcmp(pid1, pid2, lib.KCMP_FILES, 0, 0),
        f"kcmp(KCMP_FILES, {pid1}, {pid2})",
    )
    return {0: 0, 1: -1, 2: 1}[ret]


def kcmp_epoll_tfd(
    pid: int, fd: int, epoll_pid: int, efd: int, tfd: int, toff: int = 0
) -> bool:
    """kcmp(KCMP_EPOLL_TFD): is fd of pid the target (tfd, toff) of epoll
    efd of epoll_pid? toff: which of the items watching tfd (0: the first)."""
    ret = lib.ckpt_kcmp_epoll_tfd(pid, fd, epoll_pid, efd, tfd, toff)
    return _check(ret, "kcmp(KCMP_EPOLL_TFD)") == 0


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """pidfd_getfd(2): a copy (new fd, O_CLOEXEC) of another task's fd."""
    return _check(lib.ckpt_pidfd_getfd(pidfd, targetfd), "pidfd_getfd")


def tee(fd_in: int, fd_out: int, length: int, nonblock: bool = True) -> int:
    """tee(2): copy up to length bytes between pipes without consuming them."""
    flags = lib.SPLICE_F_NONBLOCK if nonblock else 0
    return _check(lib.ckpt_tee(fd_in, fd_out, length, flags), "tee")


def epoll_add(epfd: int, fd: int, events: int, data: int) -> None:
    """epoll_ctl(EPOLL_CTL_ADD) with a 64-bit data (select.epoll keeps the fd)."""
    _check(lib.ckpt_epoll_ctl(epfd, lib.EPOLL_CTL_ADD, fd, events, data), "epoll_ctl")


# ---- signalfd, timerfd, clocks -----------------------------------------------


def signalfd(mask: int, flags: int, fd: int = -1) -> int:
    """signalfd4(2): a new signalfd (or fd's mask changed) reading the
    signals of ``mask``, a 64-bit kernel sigset (bit sig - 1)."""
    return _check(lib.ckpt_signalfd(fd, mask, flags), "signalfd")


def timerfd_create(clockid: int, flags: int) -> int:
    return _check(lib.ckpt_timerfd_create(clockid, flags), "timerfd_create")


def timerfd_settime(
    fd: int, flags: int, value: tuple[int, int], interval: tuple[int, int]
) -> None:
    """Arm (or disarm: value (0, 0)) the timer; pairs are (sec, nsec)."""
    spec = ffi.new("long long[4]", [*value, *interval])
    _check(lib.ckpt_timerfd_settime(fd, flags, spec), "timerfd_settime")


def timerfd_gettime(fd: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(time left, interval) as (sec, nsec) pairs."""
    spec = ffi.new("long long[4]")
    _check(lib.ckpt_timerfd_gettime(fd, spec), "timerfd_gettime")
    return (spec[0], spec[1]), (spec[2], spec[3])


def timerfd_set_ticks(fd: int, ticks: int) -> None:
    """ioctl(TFD_IOC_SET_TICKS): expirations to be read (CONFIG_CHECKPOINT_RESTORE)."""
    _check(lib.ckpt_timerfd_set_ticks(fd, ticks), "ioctl(TFD_IOC_SET_TICKS)")


def clock_gettime_ns(clockid: int) -> int:
    """clock_gettime(2) on any clock id (time.clock_gettime_ns knows a few)."""
    ns = ffi.new("long long *")
    _check(lib.ckpt_clock_gettime(clockid, ns), "clock_gettime")
    return int(ns[0])


# ---- filesystems, credentials, prctl -----------------------------------------


def fstatfs_type(fd: int) -> int:
    """fstatfs(2)'s f_type: the magic of the file's filesystem."""
    f_type = ffi.new("long long *")
    _check(lib.ckpt_fstatfs_type(fd, f_type), "fstatfs")
    return int(f_type[0])


def setfsuid(uid: int) -> int:
    """setfsuid(2): the previous fsuid; it reports no error (setfsuid(-1)
    changes nothing and reads the current one): check the result."""
    return lib.ckpt_setfsuid(uid & 0xFFFFFFFF) & 0xFFFFFFFF  # ids are unsigned


def setfsgid(gid: int) -> int:
    """setfsgid(2): as setfsuid, for the fsgid."""
    return lib.ckpt_setfsgid(gid & 0xFFFFFFFF) & 0xFFFFFFFF


def prctl(
    option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0
) -> int:
    """prctl(2) with integer arguments: its non-negative result."""
    return _check(lib.ckpt_prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


# ---- capabilities, seccomp ----------------------------------------------------


def capget(pid: int = 0) -> tuple[int, int, int]:
    """capget(2): (effective, permitted, inheritable) of pid (0: this thread)."""
    caps = ffi.new("unsigned long long[3]")
    _check(lib.ckpt_capget(pid, caps), "capget")
    return int(caps[0]), int(caps[1]), int(caps[2])


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of this thread."""
    caps = ffi.new("unsigned long long[3]", [effective, permitted, inheritable])
    _check(lib.ckpt_capset(caps), "capset")


def seccomp_filters(pid: int) -> list[bytes]:
    """The seccomp filters of task pid, frozen by the caller (SIGSTOP or
    the cgroup freezer), oldest first, each a raw struct sock_filter
    array: ptrace seize, interrupt, PTRACE_SECCOMP_GET_FILTER, detach, the
    task left stopped or frozen as it was.  Needs CAP_SYS_ADMIN; a task
    traced by another fails with EPERM."""
    buf = ffi.new("char[]", _SECCOMP_ROOM)
    lens = ffi.new("unsigned int[]", _SECCOMP_MAX)
    n = _check(
        lib.ckpt_seccomp_filters(pid, buf, _SECCOMP_ROOM, lens, _SECCOMP_MAX),
        f"seccomp filters of {pid}",
    )
    raw = ffi.buffer(buf)
    out, at = [], 0
    for i in range(n):
        size = lens[i] * _INSN
        out.append(bytes(raw[at : at + size]))
        at += size
    return out  # index 0 is the oldest (get_nth_filter() counts from it)


def seccomp_execve(
    path: str, argv: list[str], env: dict[bytes, bytes], filters: list[bytes]
) -> None:
    """Install filters (oldest first) and execve(2), with no other system
    call in between; returns only by raising OSError."""
    for f in filters:
        if not f or len(f) % _INSN:
            raise ValueError(f"a seccomp filter of {len(f)} bytes")
    keep = [ffi.new("char[]", os.fsencode(a)) for a in argv]
    cargv = ffi.new("char *[]", [*keep, ffi.NULL])
    envs = [ffi.new("char[]", k + b"=" + v) for k, v in env.items()]
    cenv = ffi.new("char *[]", [*envs, ffi.NULL])
    insns = ffi.new("char[]", b"".join(filters) or b"\0")
    lens = ffi.new("unsigned int[]", [len(f) // _INSN for f in filters] or [0])
    ret = lib.ckpt_seccomp_execve(
        os.fsencode(path), cargv, cenv, insns, lens, len(filters)
    )
    raise OSError(-ret, f"execve {path} under seccomp: {os.strerror(-ret)}")
