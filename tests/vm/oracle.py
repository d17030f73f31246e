"""An oracle for round trips that does not use the module: what a process
tree's kernel objects look like through /proc, kcmp(2), fstat and poll.

facts(pids) describes a tree (given in tree order) with every identity
replaced by a position, so that an original tree and its restart (other pids,
other inodes) compare equal exactly when they have the same fd numbers, the
same sharing of open file descriptions and pipes, the same flags, offsets,
buffered data, eventfd counts, epoll readiness, signalfd masks, timerfd
settings (clock, flags, interval, armed or not), the contents (size, hash,
seals) of memfds and deleted files, and the same unix sockets (type, state,
name, peer as which fd of which task, shutdown, SO_PASSCRED, buffer sizes,
bytes queued; with data, the queued messages themselves).  Reading buffered data
consumes it, so facts(..., data=True) is the last look at a tree.  (The
trees themselves are built by tests/vm/trees.py.)
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import select
import socket
import stat
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyckpt.syscalls import kcmp_file, pidfd_getfd

O_CLOEXEC = 0o2000000
# f_flags bits that say something about the open file, not how it was opened
FLAG_MASK = os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK


def fdinfo(pid: int, fd: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    return out


def epoll_lines(pid: int, fd: int) -> list[tuple[int, int, int]]:
    """(tfd, events, data) of each item, from fdinfo."""
    items = []
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("tfd:"):
                w = line.split()
                items.append((int(w[1]), int(w[3], 16), int(w[5], 16)))
    return sorted(items)


def fds_of(pid: int) -> list[int]:
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


_PTY_SLAVE_MAJORS = range(136, 144)


def _kind(pid: int, fd: int, st: os.stat_result | None = None) -> str:
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    if st is not None and stat.S_ISCHR(st.st_mode):
        # a pty is one of many (/dev/pts/N): the same kind, not the same N;
        # any other device by path and number
        if os.major(st.st_rdev) in _PTY_SLAVE_MAJORS:
            return "pty"
        return f"chr {link} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if link.startswith("pipe:"):
        return "pipe"
    if link.startswith("anon_inode:"):
        return link.removeprefix("anon_inode:")
    return link  # a path: the same path in both trees


def _copy(pid: int, fd: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


F_GET_SEALS = 1034


def _contents(pid: int, fd: int) -> tuple:
    """(size, sha256, seals) of a memfd or deleted file, read with pread
    through a private open file (no offset moves, write-only files too)."""
    c = _copy(pid, fd)
    try:
        try:
            seals = fcntl.fcntl(c, F_GET_SEALS)
        except OSError:
            seals = -1
        own = os.open(f"/proc/self/fd/{c}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(c)
    try:
        size = os.fstat(own).st_size
        h = hashlib.sha256()
        pos = 0
        while pos < size:
            chunk = os.pread(own, min(1 << 20, size - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        mode = stat.S_IMODE(os.fstat(own).st_mode)
    finally:
        os.close(own)
    return (size, h.hexdigest(), seals, mode)


def _timerfd(info: dict[str, str]) -> tuple:
    """clock, settime flags, interval and whether it is armed: what a
    restart keeps (the time left and the ticks move with time)."""
    # a periodic timer that expired shows no time left until it is read
    # (the kernel forwards it then): it is armed all the same
    expired = info["it_interval"] != "(0, 0)" and int(info["ticks"]) > 0
    return (
        int(info["clockid"]),
        int(info["settime flags"], 8),
        info["it_interval"],
        info["it_value"] != "(0, 0)" or expired,
    )


def _pending(fd: int) -> bytes:
    """Bytes buffered in a pipe, read without blocking (poll + FIONREAD)."""
    n = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, n)
    out = b""
    while len(out) < n[0] and select.select([fd], [], [], 0)[0]:
        out += os.read(fd, n[0] - len(out))
    return out


@dataclass(frozen=True)
class FdFacts:
    kind: str
    flags: int
    cloexec: bool
    pos: int
    ofd: int  # open file description: position of its first fd in the tree
    obj: int  # pipe or inode: the same for both ends of a pipe
    extra: tuple = ()  # eventfd count, epoll items, pipe data


# ---- unix sockets: sock_diag read here, not through pyckpt ----

_SO_PASSCRED = 16


def _unix_diag() -> dict[int, dict]:
    """Every unix socket by inode: type, state, name, peer, icons, rqueue,
    shutdown (NETLINK_SOCK_DIAG, UNIX_DIAG: what ss -x reads)."""
    show = 0x1 | 0x4 | 0x8 | 0x10  # NAME, PEER, ICONS, RQLEN
    req = struct.pack(
        "=BBHIIIII",
        socket.AF_UNIX,
        0,
        0,
        ~0 & 0xFFFFFFFF,
        0,
        show,
        0xFFFFFFFF,
        0xFFFFFFFF,
    )
    msg = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req
    out: dict[int, dict] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:
        nl.sendall(msg)
        while True:
            buf = nl.recv(1 << 20)
            off = 0
            while off + 16 <= len(buf):
                ln, mtype = struct.unpack_from("=IH", buf, off)
                if mtype == 3:  # NLMSG_DONE
                    return out
                if mtype == 20:
                    body = buf[off + 16 : off + ln]
                    stype, state, ino = (
                        body[1],
                        body[2],
                        struct.unpack_from("=I", body, 4)[0],
                    )
                    d = {
                        "type": stype,
                        "state": state,
                        "name": b"",
                        "peer": None,
                        "icons": (),
                        "rqueue": 0,
                        "shutdown": 0,
                    }
                    a = 16
                    while a + 4 <= len(body):
                        alen, atype = struct.unpack_from("=HH", body, a)
                        val = body[a + 4 : a + alen]
                        if atype == 0:
                            d["name"] = val if val[:1] == b"\0" else val.rstrip(b"\0")
                        elif atype == 2:
                            d["peer"] = struct.unpack_from("=I", val)[0]
                        elif atype == 3:
                            d["icons"] = struct.unpack(f"={len(val) // 4}I", val)
                        elif atype == 4:
                            d["rqueue"] = struct.unpack_from("=I", val)[0]
                        elif atype == 6:
                            d["shutdown"] = val[0]
                        a += (alen + 3) & ~3
                    out[ino] = d
                off += (ln + 3) & ~3
            if not buf:
                return out


def _socket_facts(
    pid: int, fd: int, ino: int, diag: dict[int, dict], where: dict[int, tuple]
) -> tuple:
    """(type, state, name, peer as (task position, fd), shutdown, passcred,
    sndbuf, rcvbuf, bytes queued): the peer by where it is, not its inode."""
    d = diag.get(ino)
    if d is None:
        return ("not unix",)
    peer: object = "none"
    if d["peer"] is not None:
        if d["peer"] in where:
            peer = where[d["peer"]]
        elif d["peer"] == 0:
            lst = [i for i, x in diag.items() if ino in x["icons"]]
            peer = ("pending", where.get(lst[0], "outside")) if lst else "gone"
        else:
            peer = "outside"
    state = d["state"]
    if d["peer"] is None and state == 1:
        state = 7  # a datagram socket others connected to: no peer of its own
    c = _copy(pid, fd)
    try:
        s = socket.socket(fileno=c)
        try:
            opts = tuple(
                s.getsockopt(socket.SOL_SOCKET, o)
                for o in (_SO_PASSCRED, socket.SO_SNDBUF, socket.SO_RCVBUF)
            )
        finally:
            s.detach()
    finally:
        os.close(c)
    return (d["type"], state, d["name"], peer, d["shutdown"], *opts, d["rqueue"])


def _socket_queue(pid: int, fd: int) -> tuple:
    """Every queued message (data, sender), read: consumes them."""
    c = _copy(pid, fd)
    s = socket.socket(fileno=c)
    out = []
    try:
        while True:
            try:
                data, addr = s.recvfrom(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, OSError):
                break
            if not data and s.type != socket.SOCK_DGRAM:
                break  # end of stream
            out.append((data, addr or ""))
    finally:
        s.close()
    return tuple(out)


def facts(pids: list[int], data: bool = False) -> list[dict[int, FdFacts]]:
    """Per task (in the order given): fd number -> FdFacts."""
    # unix sockets: which fd of which task holds each socket inode
    where: dict[int, tuple[int, int]] = {}
    for i, pid in enumerate(pids):
        for fd in fds_of(pid):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                where.setdefault(int(link[8:-1]), (i, fd))
    diag = _unix_diag() if where else {}
    socks_read: set[int] = set()
    seen_ofd: list[tuple[int, int]] = []
    seen_obj: list[tuple[int, int]] = []
    out: list[dict[int, FdFacts]] = []
    pipes_read: set[int] = set()
    for pid in pids:
        table: dict[int, FdFacts] = {}
        for fd in fds_of(pid):
            info = fdinfo(pid, fd)
            flags = int(info["flags"], 8)
            ofd = next(
                (i for i, (p, f) in enumerate(seen_ofd) if kcmp_file(pid, fd, p, f)),
                None,
            )
            if ofd is None:
                ofd = len(seen_ofd)
                seen_ofd.append((pid, fd))
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            key = (st.st_dev, st.st_ino)
            if key not in seen_obj:
                seen_obj.append(key)
            obj = seen_obj.index(key)
            kind = _kind(pid, fd, st)
            extra: tuple = ()
            if stat.S_ISSOCK(st.st_mode):
                kind = "socket"
                extra = _socket_facts(pid, fd, st.st_ino, diag, where)
                if data and st.st_ino not in socks_read:
                    socks_read.add(st.st_ino)
                    extra += (_socket_queue(pid, fd),)
            elif kind == "[eventfd]":
                extra = (int(info["eventfd-count"], 16),)
            elif kind == "[eventpoll]":
                extra = _epoll_facts(pid, fd)
            elif kind == "[signalfd]":
                extra = (int(info["sigmask"], 16),)
            elif kind == "[timerfd]":
                extra = _timerfd(info)
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
                extra = _contents(pid, fd)  # memfd or deleted file
            elif (
                data
                and stat.S_ISFIFO(st.st_mode)
                and flags & os.O_ACCMODE != os.O_WRONLY
                and obj not in pipes_read
            ):
                pipes_read.add(obj)
                c = _copy(pid, fd)
                try:
                    extra = (_pending(c),)
                finally:
                    os.close(c)
            table[fd] = FdFacts(
                kind=kind,
                flags=flags & FLAG_MASK,
                cloexec=bool(flags & O_CLOEXEC),
                pos=int(info["pos"]),
                ofd=ofd,
                obj=obj,
                extra=extra,
            )
        out.append(table)
    return out


def _epoll_facts(pid: int, fd: int) -> tuple:
    """Items as (tfd, events, data), and what is ready right now."""
    c = _copy(pid, fd)
    try:
        ep = select.epoll.fromfd(c)
        try:
            ready = sorted(ep.poll(0))
        finally:
            ep.close()
    except BaseException:
        os.close(c)
        raise
    return (tuple(epoll_lines(pid, fd)), tuple(ready))


@dataclass(frozen=True)
class SessionFacts:
    """A task's session and group as positions in the tree (-1: outside),
    and its controlling terminal: none, or which fd of the task holds it
    (-1: none does) and its foreground group's position."""

    pgrp: int
    sid: int
    ctty_fd: int | None
    foreground: int | None


def sessions(pids: list[int]) -> list[SessionFacts]:
    """Per task (in the order given), from /proc/PID/stat and fstat."""

    def pos(x: int) -> int:
        return pids.index(x) if x in pids else -1

    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            w = f.read().rpartition(")")[2].split()
        pgrp, sid, tty_nr, tpgid = (int(x) for x in w[2:6])
        ctty_fd = fg = None
        if tty_nr:
            ctty_fd = next(
                (
                    fd
                    for fd in fds_of(pid)
                    if os.stat(f"/proc/{pid}/fd/{fd}").st_rdev == tty_nr
                    and stat.S_ISCHR(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)
                ),
                -1,
            )
            fg = pos(tpgid)
        out.append(SessionFacts(pos(pgrp), pos(sid), ctty_fd, fg))
    return out


def ctty_of(pid: int) -> int:
    """The device number of pid's controlling terminal (0: none)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[4])


def ppids(pids: list[int]) -> list[int]:
    """Each task's parent as a position in pids (-1: outside the tree)."""
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rpartition(")")[2].split()[1])
        out.append(pids.index(ppid) if ppid in pids else -1)
    return out


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


@dataclass(frozen=True)
class TaskFacts:
    zombie: int | None  # wait(2) status of an unreaped exited task
    threads: int
    table: int  # fd table: position of the first task of the tree sharing it


def task_facts(pids: list[int]) -> list[TaskFacts]:
    """Per task (in the order given): zombie status, threads and fd-table
    sharing (kcmp(KCMP_FILES), the syscall, not the module)."""
    from pyckpt.syscalls import kcmp_files

    out = []
    for i, pid in enumerate(pids):
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
        zombie = int(rest[49]) & 0xFFFF if rest[0] == "Z" else None
        threads = len(os.listdir(f"/proc/{pid}/task"))
        table = i
        if zombie is None:
            table = next(
                j
                for j in range(i + 1)
                if (j == i or out[j].zombie is None) and kcmp_files(pid, pids[j]) == 0
            )
        out.append(TaskFacts(zombie, threads, table))
    return out
