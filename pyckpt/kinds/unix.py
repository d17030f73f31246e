"""Unix sockets without the module: what the kernel says of them, their
queues read without consuming them, and sockets made again from a model.

The kind (``pyckpt/kinds/unix.py``) drives these; they work on any host
(nothing here needs /dev/ckpt), which is what the host tests use.

* ``diag()``: one sock_diag netlink dump (UNIX_DIAG, as ``ss -x``) of every
  unix socket of the network namespace, by inode number: type, state, bound
  name, the bound file's inode (VFS), the peer's inode (PEER), the clients
  waiting in a listener's queue (ICONS: the *clients'* inodes, the embryo
  sockets have none), queue lengths (RQLEN) and shutdown bits.
* ``peek_queue()``: the queued messages, left in place: ``SO_PEEK_OFF``
  from 0 with ``MSG_PEEK``, one ``recvmsg`` per datagram (or per run of
  stream bytes the kernel glues), the socket's own peek offset put back.
  A message carrying fds (``SCM_RIGHTS``) raises ``InFlight``: the peek
  itself receives them (closed at once), which is how they are seen.
* ``make_sockets()``: every socket of a tree at once (pairs, listeners,
  connections through their listener, pending connections, peers gone),
  with names, options and queues, then the shutdown state.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import functools
import os
import socket
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field

from pyckpt.abi import FileKind, HdrType, lib
from pyckpt.errors import ImageError, RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    by_holder,
    extra,
)
from pyckpt.kinds.regular import SETFL
from pyckpt.model import ErrorRecord, File, Image
from pyckpt.names import preview
from pyckpt.records import Layout, Record, Var, bad, no_nul
from pyckpt.sockdiag import Diag, diag, holders

# <asm-generic/socket.h> (x86-64); Python's socket module lacks some
SO_PASSCRED = 16
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SO_PEEK_OFF = 42


# sk_state as unix sockets use it (<net/tcp_states.h>): the values ckpt.h
# gives CKPT_UNIX_CONNECTED, _UNCONNECTED, _LISTENING and CKPT_UNIX_SHUT_*
TCP_ESTABLISHED = lib.CKPT_UNIX_CONNECTED
TCP_CLOSE = lib.CKPT_UNIX_UNCONNECTED
TCP_LISTEN = lib.CKPT_UNIX_LISTENING

# sk_shutdown bits (<net/sock.h>)
RCV_SHUTDOWN = lib.CKPT_UNIX_SHUT_RCV
SEND_SHUTDOWN = lib.CKPT_UNIX_SHUT_SEND

TYPES = {
    socket.SOCK_STREAM: "stream",
    socket.SOCK_DGRAM: "dgram",
    socket.SOCK_SEQPACKET: "seqpacket",
}
NAME_MAX = lib.CKPT_UNIX_NAME_MAX  # sizeof(sun_path)
PEEK_BUF = 256 * 1024  # first buffer for one datagram; doubled when short
PEEK_BUF_MAX = 64 << 20  # no datagram is larger than a socket buffer can be
_CMSG_FDS = 253  # SCM_MAX_FD: room for every fd one message can carry


class UnixError(Exception):
    """A socket that cannot be saved or made again, and why."""


class InFlight(UnixError):
    """A queued message carries fds (SCM_RIGHTS): not saved."""


# ---- what the kernel says ------------------------------------------------------


# ---- the model of one socket ----------------------------------------------------


@dataclass
class Msg:
    """One queued message (a datagram, or a run of stream bytes)."""

    data: bytes
    addr: bytes = b""  # datagrams: the sender's sun_path, b"" unnamed


@dataclass
class Unix:
    """What is saved of one socket (the File's ``extra``)."""

    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    state: int = TCP_CLOSE  # TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN
    name: bytes = b""  # bound name, "\0..." abstract
    peer: int = 0  # objref of the peer's file; 0: none
    listener: int = 0  # pending: objref of the listener whose queue holds it
    peer_gone: bool = False  # connected, the peer closed (or outside: external)
    external_peer: bool = False  # the peer is outside the tree (allow_external)
    foreign: int = 0  # not AF_UNIX: its family (saved external, peer gone)
    passcred: bool = False
    shutdown: int = 0  # RCV_SHUTDOWN | SEND_SHUTDOWN as the socket has them
    backlog: int = 0  # listening: listen()'s backlog
    sndbuf: int = 0  # SO_SNDBUF, SO_RCVBUF as getsockopt says
    rcvbuf: int = 0
    # a path-bound socket's file: what restart checks before replacing it
    vfs_dev: int = 0
    vfs_ino: int = 0
    name_mode: int = 0
    name_uid: int = 0
    name_gid: int = 0
    msgs: list[Msg] = field(default_factory=list)  # its receive queue, in order
    # read from an image: its UNIX record's offset (what check_image names)
    at: int = field(default=0, compare=False, repr=False)

    @property
    def path(self) -> bool:
        return bool(self.name) and self.name[0] != 0


def addr_name(addr: bytes) -> str:
    """A name as ss prints it: '@abstract' or the path."""
    if not addr:
        return ""
    if addr[0] == 0:
        return "@" + addr[1:].decode(errors="backslashreplace")
    return addr.decode(errors="surrogateescape")


def _sockaddr(name: bytes) -> str | bytes:
    # Python takes a str path, or bytes whose leading NUL means abstract
    return name if name[0] == 0 else os.fsdecode(name)


def _name_bytes(addr: str | bytes | None) -> bytes:
    if not addr:
        return b""
    return addr if isinstance(addr, bytes) else os.fsencode(addr)


def peek_queue(sock: socket.socket, stype: int, shutdown: int = 0) -> list[Msg]:
    """The socket's receive queue, in order, left unread (MSG_PEEK from
    SO_PEEK_OFF 0; the socket's own offset is put back).  InFlight if a
    message carries fds.

    Limits (the kernel's): a zero-length datagram already peeked once (by
    the program, or an earlier checkpoint) is skipped by every peek at an
    offset; a seqpacket socket shut for reading says end-of-file as a
    zero-length read, so zero-length records at its end are not seen."""
    old = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    anc = socket.CMSG_SPACE(_CMSG_FDS * 4) + socket.CMSG_SPACE(12)
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
    out: list[Msg] = []
    offset = 0
    size = PEEK_BUF
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    try:
        while True:
            try:
                data, cmsgs, mflags, addr = sock.recvmsg(size, anc, flags)
            except BlockingIOError:
                return out
            fds = _close_fds(cmsgs)
            if fds or mflags & socket.MSG_CTRUNC:
                raise InFlight(
                    f"{fds or 'some'} fd(s) in flight in its queue (SCM_RIGHTS "
                    f"sent, not yet received) after {len(out)} message(s)"
                )
            if not data and (
                stype == socket.SOCK_STREAM
                or (stype == socket.SOCK_SEQPACKET and shutdown & RCV_SHUTDOWN)
            ):
                return out  # end of stream: the peer shut down or left
            if stype != socket.SOCK_STREAM and mflags & socket.MSG_TRUNC:
                # larger than the buffer: peek it again, whole
                if size >= PEEK_BUF_MAX:
                    raise UnixError(f"a datagram above {PEEK_BUF_MAX} bytes")
                size *= 2
                sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, offset)
                continue
            offset += len(data)
            out.append(
                Msg(data, _name_bytes(addr) if stype != socket.SOCK_STREAM else b"")
            )
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, old)


def _close_fds(cmsgs: list[tuple[int, int, bytes]]) -> int:
    """Close the fds a peek received; how many there were."""
    n = 0
    for level, ctype, cdata in cmsgs:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            for fd in struct.unpack(
                f"={len(cdata) // 4}i", cdata[: len(cdata) // 4 * 4]
            ):
                n += 1
                with contextlib.suppress(OSError):
                    os.close(fd)
    return n


def save(fd: int, d: Diag) -> Unix:
    """A socket's own state from a copy of its fd and its diag (the peer,
    listener and flags about them are the caller's to fill)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        u = Unix(type=d.type, state=d.state, name=d.name, shutdown=d.shutdown)
        u.passcred = bool(sock.getsockopt(socket.SOL_SOCKET, SO_PASSCRED))
        u.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        u.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if d.state == TCP_LISTEN:
            u.backlog = d.wqueue
        if u.path:
            if d.vfs is not None:
                u.vfs_dev, u.vfs_ino = d.vfs
            with contextlib.suppress(OSError):
                st = os.lstat(u.name)
                # the inode only: through overlayfs the socket's dentry is
                # the upper layer's, whose st_dev stat(2) does not show
                if stat.S_ISSOCK(st.st_mode) and st.st_ino == u.vfs_ino:
                    u.vfs_dev = st.st_dev  # as restart's lstat will see it
                    u.name_mode, u.name_uid, u.name_gid = (
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                    )
        if d.state != TCP_LISTEN:
            u.msgs = peek_queue(sock, d.type, d.shutdown)
        return u
    finally:
        sock.close()


# ---- making them again -------------------------------------------------------------


def _fresh_bufs(stype: int) -> tuple[int, int]:
    with socket.socket(socket.AF_UNIX, stype) as s:
        return (
            s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )


def _options(sock: socket.socket, u: Unix) -> None:
    """SO_PASSCRED and the buffer sizes (only those a fresh socket lacks: a
    set size is locked against the kernel's own tuning)."""
    if u.passcred:
        sock.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
    snd, rcv = _fresh_bufs(u.type)
    for want, have, opt, force in (
        (u.sndbuf, snd, socket.SO_SNDBUF, SO_SNDBUFFORCE),
        (u.rcvbuf, rcv, socket.SO_RCVBUF, SO_RCVBUFFORCE),
    ):
        if want and want != have:
            # the kernel doubles what it is given; above wmem_max/rmem_max
            # only the FORCE variant (CAP_NET_ADMIN) reaches the value
            sock.setsockopt(socket.SOL_SOCKET, opt, want // 2)
            if sock.getsockopt(socket.SOL_SOCKET, opt) != want:
                with contextlib.suppress(PermissionError):
                    sock.setsockopt(socket.SOL_SOCKET, force, want // 2)


def _free_path(u: Unix, what: str) -> None:
    """Before binding a path: a socket file left there by the checkpointed
    tree (same inode, nobody listening) is removed; anything else refused."""
    path = os.fsdecode(u.name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnixError(f"{what}: {path} exists and is not a socket: not replaced")
    if u.vfs_ino and (st.st_dev, st.st_ino) != (u.vfs_dev, u.vfs_ino):
        raise UnixError(
            f"{what}: {path} is another socket file than the checkpointed one "
            f"(device/inode {st.st_dev:#x}/{st.st_ino}, recorded "
            f"{u.vfs_dev:#x}/{u.vfs_ino}): not replaced"
        )
    probe = socket.socket(socket.AF_UNIX, u.type)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: its socket is gone
    except BlockingIOError:
        raise UnixError(
            f"{what}: {path} is in use (a listener with a full queue)"
        ) from None
    except OSError as e:
        if e.errno != _errno.EPROTOTYPE:
            raise UnixError(f"{what}: {path}: {e.strerror}") from None
    else:
        raise UnixError(f"{what}: {path} is in use: something listens there")
    finally:
        probe.close()
    os.unlink(path)


def _bind(sock: socket.socket, u: Unix, what: str) -> None:
    """Bind u's name.  A path is bound by the socket's holder (a helper
    with its rights, kinds/base.py Objects.as_holder), so the socket file
    is its owner's; its mode comes from the umask while binding, never
    from a chmod by path afterwards."""
    if not u.name:
        return
    if u.path:
        _free_path(u, what)
    umask = None
    if u.path and u.name_mode:
        umask = os.umask(~stat.S_IMODE(u.name_mode) & 0o777)
    try:
        sock.bind(_sockaddr(u.name))
    except OSError as e:
        raise UnixError(f"{what}: bind {addr_name(u.name)}: {e.strerror}") from None
    finally:
        if umask is not None:
            os.umask(umask)
    if u.path and u.name_mode and os.geteuid() == 0:
        # a root task's socket (made by the coordinator): its file's owner
        # as recorded (a root task may have bound it with other fs ids)
        path = os.fsdecode(u.name)
        with contextlib.suppress(OSError):
            if (os.lstat(path).st_uid, os.lstat(path).st_gid) != (
                u.name_uid,
                u.name_gid,
            ):
                os.lchown(path, u.name_uid, u.name_gid)


def _send_all(sender: socket.socket, msgs: list[Msg], to: bytes, what: str) -> None:
    """Queue msgs into the receiver: one send per datagram, a stream's bytes
    until all are in (never blocking: a full queue is an error)."""
    for m in msgs:
        try:
            if sender.type != socket.SOCK_STREAM:
                if to:
                    sender.sendto(m.data, socket.MSG_DONTWAIT, _sockaddr(to))
                else:
                    sender.send(m.data, socket.MSG_DONTWAIT)
                continue
            view = memoryview(m.data)
            while view:
                view = view[sender.send(view, socket.MSG_DONTWAIT) :]
        except OSError as e:
            raise UnixError(
                f"{what}: re-queueing {len(m.data)} bytes: {e.strerror}"
            ) from None


def make_sockets(socks: dict[int, Unix]) -> dict[int, int]:
    """Make every socket of ``socks`` (key: objref) at once; key -> a new fd
    (close-on-exec, blocking: the caller sets the file flags).  UnixError
    (every fd made closed) for what cannot be made.

    Pairs whose two ends are both in ``socks``: through their listener when
    one end has a listener's name (connect, then accept: names kept), else
    socketpair().  A pending connection: connect() to its listener, not
    accepted.  A datagram socket connected to a bound one: connect().  A
    peer gone (or external): a socketpair whose other end is closed once
    the queue is re-sent.  Then every queue is re-sent from the peer (or
    from a temporary socket, or the sender's own socket when the sender's
    name is one of ``socks``), then the shutdown bits.
    """
    made: dict[int, socket.socket] = {}
    temp: dict[int, socket.socket] = {}  # the other end of a peer gone
    try:
        _make_all(socks, made, temp)
        _requeue(socks, made, temp)
        for s in temp.values():
            s.close()
        temp.clear()
        for key, u in socks.items():
            if u.peer_gone or not u.shutdown:
                continue
            how = {RCV_SHUTDOWN: socket.SHUT_RD, SEND_SHUTDOWN: socket.SHUT_WR}.get(
                u.shutdown, socket.SHUT_RDWR
            )
            with contextlib.suppress(OSError):  # ENOTCONN: own bits only
                made[key].shutdown(how)
        return {key: s.detach() for key, s in made.items()}
    except BaseException:
        for s in (*made.values(), *temp.values()):
            s.close()
        raise


def _what(key: int, u: Unix) -> str:
    name = f" {addr_name(u.name)}" if u.name else ""
    return f"objref {key} ({TYPES.get(u.type, u.type)} socket{name})"


def _make_all(
    socks: dict[int, Unix],
    made: dict[int, socket.socket],
    temp: dict[int, socket.socket],
) -> None:
    def new(key: int, u: Unix) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, u.type)
        made[key] = s
        _options(s, u)
        return s

    for key, u in socks.items():
        if u.type not in TYPES:
            raise UnixError(f"{_what(key, u)}: unknown socket type {u.type}")
    listeners = {
        (u.type, u.name): key
        for key, u in socks.items()
        if u.state == TCP_LISTEN and u.name
    }
    # 1. listeners and unconnected sockets (bound or not)
    for key, u in socks.items():
        if u.state == TCP_LISTEN:
            s = new(key, u)
            _bind(s, u, _what(key, u))
            s.listen(u.backlog)
        elif u.state != TCP_ESTABLISHED:
            s = new(key, u)
            _bind(s, u, _what(key, u))
    # 2. connected pairs; datagram sockets connected to a bound one
    for key, u in socks.items():
        if u.state != TCP_ESTABLISHED or key in made:
            continue
        what = _what(key, u)
        if u.peer_gone or u.external_peer:
            a, b = socket.socketpair(socket.AF_UNIX, u.type)
            made[key], temp[key] = a, b
            _options(a, u)
            continue
        if u.listener:
            continue  # pending: after every accepted connection
        p = socks.get(u.peer)
        if p is None:
            raise UnixError(f"{what}: its peer {u.peer} is not in the image")
        if p.type != u.type:
            raise UnixError(f"{what}: its peer {u.peer} has another type")
        if p.peer != key:
            # one-way: a datagram socket connected to a bound one (below)
            if u.type != socket.SOCK_DGRAM or not p.name:
                raise UnixError(f"{what}: connected one way to an unnamed socket")
            continue
        if u.type != socket.SOCK_DGRAM and (u.type, u.name) in listeners:
            # u was accepted on a listener: its peer is the client
            key, u, p = u.peer, p, u
            what = _what(key, u)
        via = listeners.get((u.type, p.name)) if u.type != socket.SOCK_DGRAM else None
        if via is not None and u.peer not in made:
            # u is the client, p was accepted on the listener: names kept
            c = new(key, u)
            _bind(c, u, what)
            c.connect(_sockaddr(p.name))
            a, _ = made[via].accept()
            made[u.peer] = a
            _options(a, p)
            continue
        # no listener to go through: a pair, unnamed (an accepted socket's
        # name is its listener's: binding it again would take the path)
        a, b = socket.socketpair(socket.AF_UNIX, u.type)
        made[key], made[u.peer] = a, b
        _options(a, u)
        _options(b, p)
        if u.type == socket.SOCK_DGRAM:
            _bind(a, u, what)
            _bind(b, p, _what(u.peer, p))
    # 2b. datagram sockets connected one way, once their peer exists (it
    # may be connected one way itself)
    oneway = [
        k
        for k, u in socks.items()
        if u.state == TCP_ESTABLISHED and k not in made and not u.listener
    ]
    while oneway:
        ready = [k for k in oneway if socks[k].peer in made]
        if not ready:
            raise UnixError(
                f"{_what(oneway[0], socks[oneway[0]])}: a cycle of one-way peers"
            )
        for key in ready:
            u = socks[key]
            s = new(key, u)
            _bind(s, u, _what(key, u))
            s.connect(_sockaddr(socks[u.peer].name))
            oneway.remove(key)
    # 3. pending connections, in their listener's queue, not accepted
    for key, u in socks.items():
        if key in made or not u.listener:
            continue
        lu = socks.get(u.listener)
        if lu is None or lu.state != TCP_LISTEN or u.listener not in made:
            raise UnixError(
                f"{_what(key, u)}: its listener {u.listener} is not in the image"
            )
        c = new(key, u)
        _bind(c, u, _what(key, u))
        c.setblocking(False)
        try:
            c.connect(_sockaddr(lu.name))
        except BlockingIOError:
            raise UnixError(
                f"{_what(key, u)}: the queue of listener {u.listener} is full"
            ) from None
        c.setblocking(True)


def _requeue(
    socks: dict[int, Unix],
    made: dict[int, socket.socket],
    temp: dict[int, socket.socket],
) -> None:
    by_name = {
        (u.type, u.name): key
        for key, u in socks.items()
        if u.name and u.state != TCP_LISTEN
    }
    for key, u in socks.items():
        if not u.msgs:
            continue
        what = _what(key, u)
        if key in temp:
            _send_all(temp[key], u.msgs, b"", what)
        elif u.type == socket.SOCK_DGRAM and not (u.peer and socks[u.peer].peer == key):
            # a datagram socket others send to: from each sender's own
            # socket when it is ours (its address kept), else unnamed
            if not u.name:
                raise UnixError(f"{what}: queued datagrams but no name to send them to")
            anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                for m in u.msgs:
                    src = by_name.get((u.type, m.addr))
                    sender = made[src] if src is not None and src != key else anon
                    _send_all(sender, [m], u.name, what)
            finally:
                anon.close()
        elif u.peer in made:
            _send_all(made[u.peer], u.msgs, b"", what)
        else:
            raise UnixError(f"{what}: queued data but no peer to send it from")


def save_all(
    fds: dict[int, int],
    allow_external: bool = False,
    take: Callable[[int, int], None] | None = None,
) -> tuple[dict[int, Unix], dict[int, str]]:
    """Save the sockets of ``fds`` (key -> an fd on it; each key one socket)
    with their peers resolved among them: (key -> Unix, key -> why refused).

    A peer outside ``fds`` is refused (or, allow_external, saved as a peer
    gone, marked external_peer); a pending connection names its listener;
    a client waiting on a listener outside is refused the same way.
    """
    inos = {key: os.fstat(fd).st_ino for key, fd in fds.items()}
    by_ino = {ino: key for key, ino in inos.items()}
    diags = diag()  # all: a client may wait on a listener outside
    pending = {c: by_ino.get(d.ino, 0) for d in diags.values() for c in d.icons}
    out: dict[int, Unix] = {}
    problems: dict[int, str] = {}
    for key, fd in fds.items():
        d = diags.get(inos[key])
        if d is None:
            problems[key] = f"socket:[{inos[key]}]: sock_diag does not report it"
            continue
        try:
            u = save(fd, d)
        except UnixError as e:
            problems[key] = f"socket:[{d.ino}]: {e}"
            continue
        if take is not None and u.msgs:  # the byte budget, socket by socket
            take(key, sum(len(m.data) for m in u.msgs))
        outside = [c for c in d.icons if c not in by_ino]
        if d.state == TCP_LISTEN and outside and not allow_external:
            who = (
                ", ".join(f"pid {p} fd {f}" for c in outside for p, f in holders(c))
                or "no process"
            )
            problems[key] = (
                f"socket:[{d.ino}] (listening on {addr_name(d.name)}): "
                f"{len(outside)} connection(s) from outside the tree wait in "
                f"its queue (held by {who})"
            )
            continue
        if u.path and not u.name.startswith(b"/"):
            problems[key] = (
                f"socket:[{d.ino}]: bound to the relative path "
                f"{addr_name(u.name)}: only absolute paths are rebound"
            )
            continue
        if d.peer is None and d.state == TCP_ESTABLISHED:
            u.state = TCP_CLOSE  # connected to, not connected: no peer
        if d.peer is not None:
            u.state = TCP_ESTABLISHED
            if d.peer in by_ino:
                u.peer = by_ino[d.peer]
            elif d.peer == 0 and d.ino in pending:
                u.listener = pending[d.ino]
                if not u.listener:
                    why = _outside(d.ino, "is waiting in the queue of a listener")
                    if allow_external:
                        u.external_peer = u.peer_gone = True
                    else:
                        problems[key] = why
                        continue
                elif _outq(fd):
                    problems[key] = (
                        f"socket:[{d.ino}]: {_outq(fd)} bytes sent on a "
                        "connection its listener has not accepted yet"
                    )
                    continue
            elif d.peer == 0:
                u.peer_gone = True
            else:
                who = holders(d.peer)
                peer = ", ".join(f"pid {p} fd {f}" for p, f in who) or "no process"
                why = (
                    f"socket:[{d.ino}]: its peer socket:[{d.peer}] is outside "
                    f"the tree (held by {peer})"
                )
                if not allow_external:
                    problems[key] = why
                    continue
                u.external_peer = u.peer_gone = True
        out[key] = u
    return out, problems


def _outside(ino: int, what: str) -> str:
    return f"socket:[{ino}] {what} outside the tree"


def _outq(fd: int) -> int:
    """SIOCOUTQ: bytes the socket sent that nobody has read yet."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.TIOCOUTQ, buf)  # SIOCOUTQ == TIOCOUTQ
    return int.from_bytes(buf, "little")


def components(socks: dict[int, Unix]) -> dict[int, int]:
    """key -> the key of its set: sockets that make_sockets() must make
    together (peers, a pending connection and its listener, sockets with
    one name: a listener and those accepted on it, a datagram receiver and
    the named senders of its queued messages)."""
    up = {key: key for key in socks}

    def find(k: int) -> int:
        while up[k] != k:
            up[k] = up[up[k]]
            k = up[k]
        return k

    def join(a: int, b: int) -> None:
        if a in up and b in up:
            ra, rb = find(a), find(b)
            if ra != rb:
                up[max(ra, rb)] = min(ra, rb)

    named: dict[tuple[int, bytes], int] = {}
    for key, u in socks.items():
        join(key, u.peer)
        join(key, u.listener)
        if u.name:
            join(key, named.setdefault((u.type, u.name), key))
    for key, u in socks.items():
        for m in u.msgs:
            if m.addr:
                join(key, named.get((u.type, m.addr), key))
    return {key: find(key) for key in socks}


def _restore_set(objs: Objects, files: list[File]) -> None:
    socks = {f.objref: extra(f, Unix) for f in files}
    try:
        made = make_sockets(socks)
    except (UnixError, OSError) as e:
        raise RestartError(f"unix sockets: {e}", getattr(e, "errno", 0) or 0) from e
    for fd in made.values():
        objs.keep(fd)
    for f in files:
        fd = made[f.objref]
        fcntl.fcntl(fd, fcntl.F_SETFL, f.f_flags & SETFL)
        objs.insert(f.objref, fd)
    objs.done()


# ---- the kind ------------------------------------------------------------------------

_STATES = (TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN)


def _family_name(family: int, stype: int) -> str:
    if family in (socket.AF_INET, socket.AF_INET6):
        proto = {socket.SOCK_STREAM: "TCP", socket.SOCK_DGRAM: "UDP"}.get(stype, "raw")
        return f"{proto} ({socket.AddressFamily(family).name})"
    with contextlib.suppress(ValueError):
        return socket.AddressFamily(family).name
    return f"family {family}"


def _foreign(fd: int) -> tuple[int, int, str]:
    """A socket's family, type and addresses (for the message that refuses it)."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        family = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        stype = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        where = ""
        with contextlib.suppress(OSError):
            where = f" {s.getsockname()}"
        with contextlib.suppress(OSError):
            where += f" -> {s.getpeername()}"
        return family, stype, where
    finally:
        s.close()


def _check_unix(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    for key in ("peer", "listener"):
        if f[key] < 0 or f[key] == f["objref"]:
            raise bad(rec, name, f"{key} {f[key]}: not another file's objref")
    if f["type"] not in TYPES:
        raise bad(rec, name, f"type {f['type']}: not stream, dgram or seqpacket")
    if f["state"] not in _STATES:
        raise bad(rec, name, f"state {f['state']} unknown")
    if f["flags"] & ~lib.CKPT_UNIX_FLAGS:
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")
    if f["shutdown"] & ~(RCV_SHUTDOWN | SEND_SHUTDOWN):
        raise bad(rec, name, f"shutdown {f['shutdown']:#x} unknown")
    if f["nr_msgs"] > lib.CKPT_UNIX_MSGS_MAX:
        raise bad(rec, name, f"nr_msgs {f['nr_msgs']} above CKPT_UNIX_MSGS_MAX")
    gone = bool(f["flags"] & lib.CKPT_UNIX_PEER_GONE)
    if f["family"] != socket.AF_UNIX and not gone:
        raise bad(rec, name, f"family {f['family']}: not AF_UNIX nor a peer gone")
    if f["state"] == TCP_LISTEN and (
        f["peer"] or f["listener"] or f["nr_msgs"] or not f["name"]
    ):
        raise bad(rec, name, "listening: a peer, listener, queue or no name")
    if f["state"] != TCP_ESTABLISHED and (f["peer"] or f["listener"] or gone):
        raise bad(rec, name, "unconnected with a peer, listener or a peer gone")
    if f["state"] == TCP_ESTABLISHED and (
        bool(f["peer"]) + bool(f["listener"]) + gone != 1
    ):
        raise bad(rec, name, "connected: not exactly one of peer, listener, gone")
    if f["listener"] and f["type"] == socket.SOCK_DGRAM:
        raise bad(rec, name, "a datagram socket waiting on a listener")
    if f["flags"] & lib.CKPT_UNIX_EXTERNAL_PEER and not gone:
        raise bad(rec, name, "external peer without PEER_GONE")
    if f["name"][:1] not in (b"", b"\0"):
        no_nul(rec, name, "name")


def _check_msg(rec: Record, name: str) -> None:
    if rec.fields["objref"] <= 0:
        raise bad(rec, name, f"objref {rec.fields['objref']} <= 0")


class UnixKind(Kind):
    name = "unix socket"
    reparse = True
    kinds = (FileKind.UNIX,)
    reported = frozenset({FileKind.SOCK})
    records = (
        (
            HdrType.UNIX,
            Layout(
                "struct ckpt_hdr_unix",
                (Var("name", "name_len", "CKPT_UNIX_NAME_MAX"),),
            ),
            _check_unix,
        ),
        (
            HdrType.UNIX_MSG,
            Layout(
                "struct ckpt_hdr_unix_msg",
                (
                    Var("data", "data_len", "CKPT_UNIX_DATA_MAX"),
                    Var("addr", "addr_len", "CKPT_UNIX_NAME_MAX"),
                ),
            ),
            _check_msg,
        ),
    )

    # ---- checkpoint ----

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:

        family, stype, where = _foreign(r.local)
        f.kind = FileKind.UNIX
        if family == socket.AF_UNIX:
            return True  # saved in collect(), with its peer
        what = f"{_family_name(family, stype)} socket{where}"
        if not col.opts.allow_external or stype not in TYPES:
            self.problem(
                col,
                r,
                f"{what}: only unix sockets are saved (--allow-external "
                "restarts a TCP or UDP socket as one whose peer has gone)",
            )
            return False
        f.extra = Unix(
            type=stype,
            state=TCP_ESTABLISHED,
            foreign=family,
            peer_gone=True,
            external_peer=True,
        )
        col.image.errors.append(
            ErrorRecord(
                0,
                f"external: {r.where()}: {what}: restarts with its peer gone",
                f.objref,
                r.pid,
                r.fd,
            )
        )
        return True

    def collect(self, col: Collector) -> None:

        mine = {
            f.objref: col.first[f.objref]
            for f in col.of_kind(FileKind.UNIX)
            if f.extra is None
        }
        if not mine:
            return
        try:
            saved, problems = save_all(
                {o: r.local for o, r in mine.items()},
                col.opts.allow_external,
                lambda o, n: col.take(mine[o], n, "its queued messages"),
            )
        except OSError as e:
            for r in mine.values():
                self.problem(col, r, f"sock_diag failed: {e}")
            return
        for o, why in problems.items():
            self.problem(col, mine[o], why)
        for o, u in saved.items():
            col.image.files[o].extra = u
            if u.external_peer:
                r = mine[o]
                col.image.errors.append(
                    ErrorRecord(
                        0,
                        f"external: {r.where()}: unix socket: its "
                        "peer is outside the tree: restarts with its "
                        "peer gone",
                        o,
                        r.pid,
                        r.fd,
                    )
                )

    # ---- the image ----

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        u = extra(f, Unix)
        flags = (
            (lib.CKPT_UNIX_PASSCRED if u.passcred else 0)
            | (lib.CKPT_UNIX_PEER_GONE if u.peer_gone else 0)
            | (lib.CKPT_UNIX_EXTERNAL_PEER if u.external_peer else 0)
        )
        utag = w.add(
            HdrType.UNIX,
            tag,
            {
                "objref": f.objref,
                "peer": u.peer,
                "listener": u.listener,
                "family": u.foreign or socket.AF_UNIX,
                "type": u.type,
                "state": u.state,
                "flags": flags,
                "shutdown": u.shutdown,
                "backlog": u.backlog,
                "sndbuf": u.sndbuf,
                "rcvbuf": u.rcvbuf,
                "nr_msgs": len(u.msgs),
                "name_mode": u.name_mode,
                "name_uid": u.name_uid,
                "name_gid": u.name_gid,
                "vfs_dev": u.vfs_dev,
                "vfs_ino": u.vfs_ino,
            },
            {"name": u.name},
        )
        for m in u.msgs:
            w.add(
                HdrType.UNIX_MSG,
                utag,
                {"objref": f.objref},
                {"data": m.data, "addr": m.addr},
            )

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        urec = p.child(rec, HdrType.UNIX, "after a UNIX FILE")
        uf = urec.fields
        flags = uf["flags"]
        u = Unix(
            type=uf["type"],
            state=uf["state"],
            name=uf["name"],
            peer=uf["peer"],
            listener=uf["listener"],
            peer_gone=bool(flags & lib.CKPT_UNIX_PEER_GONE),
            external_peer=bool(flags & lib.CKPT_UNIX_EXTERNAL_PEER),
            foreign=0 if uf["family"] == socket.AF_UNIX else uf["family"],
            passcred=bool(flags & lib.CKPT_UNIX_PASSCRED),
            shutdown=uf["shutdown"],
            backlog=uf["backlog"],
            sndbuf=uf["sndbuf"],
            rcvbuf=uf["rcvbuf"],
            vfs_dev=uf["vfs_dev"],
            vfs_ino=uf["vfs_ino"],
            name_mode=uf["name_mode"],
            name_uid=uf["name_uid"],
            name_gid=uf["name_gid"],
            at=urec.offset,
        )
        for _ in range(uf["nr_msgs"]):
            m = p.read((HdrType.UNIX_MSG,), f"UNIX record with nr_msgs {uf['nr_msgs']}")
            p.ptag(m, urec.tag, "its UNIX")
            if m.fields["objref"] != f.objref:
                raise ImageError(
                    m.offset,
                    f"UNIX_MSG record: objref {m.fields['objref']} differs from "
                    f"its UNIX's {f.objref}",
                )
            u.msgs.append(Msg(m.fields["data"], m.fields["addr"]))
        f.extra = u

    def check_model(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind == FileKind.UNIX:
                extra(f, Unix)

    def check_image(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind != FileKind.UNIX:
                continue
            u = extra(f, Unix)
            for key, ref in (("peer", u.peer), ("listener", u.listener)):
                if not ref:
                    continue
                o = image.files.get(ref)
                ou = o.extra if o is not None else None
                if not isinstance(ou, Unix) or ou.type != u.type:
                    raise ImageError(
                        u.at,
                        f"UNIX record of objref {f.objref}: {key} {ref} is not "
                        "a unix socket of its type",
                    )
                if key == "listener" and ou.state != TCP_LISTEN:
                    raise ImageError(
                        u.at,
                        f"UNIX record of objref {f.objref}: listener {ref} "
                        "does not listen",
                    )
                if (
                    key == "peer"
                    and ou.peer != f.objref
                    and (u.type != socket.SOCK_DGRAM or not ou.name)
                ):
                    raise ImageError(
                        u.at,
                        f"UNIX record of objref {f.objref}: peer {ref} is "
                        "not its peer back, nor a bound datagram socket",
                    )

    # ---- restart ----

    def check(self, files: list[File], plan: Plan) -> None:
        for f in files:
            u = extra(f, Unix)
            if u.external_peer:
                plan.warnings.append(
                    f"objref {f.objref}: {self.describe(f)}: its peer was "
                    "outside the tree: restarted with its peer gone"
                )

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        # each set of sockets made together (pairs, a listener and its
        # connections, datagram senders and their receiver) by a helper
        # with the rights of the holder of its first socket: names bound
        # and connected to as that user, peer credentials and queued
        # SCM_CREDENTIALS naming it, never root
        sets = components({f.objref: extra(f, Unix) for f in files})
        firsts: dict[int, File] = {}  # each set's first socket (image order)
        for f in files:
            firsts.setdefault(sets[f.objref], f)
        for creds, mine in by_holder(plan, list(firsts.values())):
            # in image order, as one helper's make_sockets() is given them
            # (a root tree's: all, exactly as before)
            ours = {sets[f.objref] for f in mine}
            group = [f for f in files if sets[f.objref] in ours]
            objs.as_holder(creds, functools.partial(_restore_set, files=group))

    # ---- show ----

    def describe(self, f: File) -> str:
        u = f.extra
        if not isinstance(u, Unix):
            return "socket"
        if u.foreign:
            return f"{_family_name(u.foreign, u.type)} socket (external, peer gone)"
        out = f"unix {TYPES.get(u.type, u.type)}"
        if u.name:
            out += f" {addr_name(u.name)}"
        if u.state == TCP_LISTEN:
            out += f" listening (backlog {u.backlog})"
        elif u.peer:
            out += f" -> objref {u.peer}"
        elif u.listener:
            out += f" pending on objref {u.listener}"
        elif u.peer_gone:
            out += " (peer outside: gone)" if u.external_peer else " (peer gone)"
        if u.msgs:
            out += f", {len(u.msgs)} queued ({sum(len(m.data) for m in u.msgs)} bytes)"
        return out

    def details(self, image: Image) -> list[str]:

        lines = []
        for ref in sorted(image.files):
            f = image.files[ref]
            u = f.extra
            if f.kind != FileKind.UNIX or not isinstance(u, Unix):
                continue
            opts = [
                n
                for n, on in (
                    ("passcred", u.passcred),
                    ("shut rd", u.shutdown & RCV_SHUTDOWN),
                    ("shut wr", u.shutdown & SEND_SHUTDOWN),
                )
                if on
            ]
            extra_s = f" [{', '.join(opts)}]" if opts else ""
            lines.append(
                f"socket {ref}: {self.describe(f)}; sndbuf {u.sndbuf} rcvbuf "
                f"{u.rcvbuf}{extra_s}"
            )
            for m in u.msgs:
                frm = f" from {addr_name(m.addr)}" if m.addr else ""
                lines.append(f"  {len(m.data)} bytes{frm} {preview(m.data)}")
        return lines


KIND = UnixKind()
