"""sock_diag (NETLINK_SOCK_DIAG, UNIX_DIAG): what the kernel says of every
unix socket of the caller's network namespace (name, bound file, peer,
waiting clients, queue lengths, shutdown), by inode number; and who holds a
socket, for error messages.  Used by the unix kind and by ``pyckpt ls``."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

# <linux/sock_diag.h>, <linux/unix_diag.h>
NETLINK_SOCK_DIAG = 4


SOCK_DIAG_BY_FAMILY = 20


NLM_F_REQUEST = 0x1


NLM_F_DUMP = 0x300


NLMSG_ERROR = 2


NLMSG_DONE = 3


UDIAG_SHOW_NAME = 0x01


UDIAG_SHOW_VFS = 0x02


UDIAG_SHOW_PEER = 0x04


UDIAG_SHOW_ICONS = 0x08


UDIAG_SHOW_RQLEN = 0x10


UNIX_DIAG_NAME = 0


UNIX_DIAG_VFS = 1


UNIX_DIAG_PEER = 2


UNIX_DIAG_ICONS = 3


UNIX_DIAG_RQLEN = 4


UNIX_DIAG_SHUTDOWN = 6


@dataclass
class Diag:
    """One unix socket as UNIX_DIAG reports it."""

    ino: int
    type: int  # SOCK_*
    state: int  # TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN
    name: bytes = b""  # sun_path as bound ("\0..." abstract), b"" unbound
    vfs: tuple[int, int] | None = None  # (st_dev, st_ino) of the bound file
    # the peer's inode; 0: gone or an embryo (no inode); None: no peer (a
    # datagram socket others connected to is ESTABLISHED without one)
    peer: int | None = None
    icons: list[int] = field(default_factory=list)  # clients waiting (listener)
    rqueue: int = 0  # bytes queued to read; a listener: connections waiting
    wqueue: int = 0  # bytes sent not yet read; a listener: its backlog
    shutdown: int = 0  # RCV_SHUTDOWN | SEND_SHUTDOWN


def _kdev(dev: int) -> int:
    # the kernel's own dev_t (MINORBITS 20) as stat(2) encodes it
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def _parse_diag(body: bytes) -> Diag:
    _family, stype, state, _pad, ino = struct.unpack_from("=BBBBI", body)
    d = Diag(ino=ino, type=stype, state=state)
    off = 16  # struct unix_diag_msg
    while off + 4 <= len(body):
        nla_len, nla_type = struct.unpack_from("=HH", body, off)
        if nla_len < 4:
            break
        val = body[off + 4 : off + nla_len]
        t = nla_type & 0x3FFF
        if t == UNIX_DIAG_NAME:
            # a path's length counts its NUL; an abstract name's is exact
            d.name = bytes(val)
            if d.name[:1] != b"\0":
                d.name = d.name.split(b"\0", 1)[0]
        elif t == UNIX_DIAG_VFS:
            vino, vdev = struct.unpack_from("=II", val)
            d.vfs = (_kdev(vdev), vino)
        elif t == UNIX_DIAG_PEER:
            (d.peer,) = struct.unpack_from("=I", val)
        elif t == UNIX_DIAG_ICONS:
            d.icons = list(
                struct.unpack(f"={len(val) // 4}I", val[: len(val) // 4 * 4])
            )
        elif t == UNIX_DIAG_RQLEN:
            d.rqueue, d.wqueue = struct.unpack_from("=II", val)
        elif t == UNIX_DIAG_SHUTDOWN:
            d.shutdown = val[0]
        off += (nla_len + 3) & ~3
    return d


def diag(inos: Iterable[int] | None = None) -> dict[int, Diag]:
    """Every unix socket of the caller's network namespace (or only those
    of ``inos``), by inode number: one netlink dump."""
    want = None if inos is None else set(inos)
    # (UNIX_DIAG_SHUTDOWN comes with every reply)
    show = (
        UDIAG_SHOW_NAME
        | UDIAG_SHOW_VFS
        | UDIAG_SHOW_PEER
        | UDIAG_SHOW_ICONS
        | UDIAG_SHOW_RQLEN
    )
    req = struct.pack(
        "=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, show, 0xFFFFFFFF, 0xFFFFFFFF
    )
    msg = (
        struct.pack(
            "=IHHII",
            16 + len(req),
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            0,
        )
        + req
    )
    out: dict[int, Diag] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.sendall(msg)
        while True:
            buf = nl.recv(1 << 20)
            off = 0
            while off + 16 <= len(buf):
                ln, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", buf, off)
                if ln < 16:
                    raise OSError(
                        errno.EBADMSG, "sock_diag (UNIX_DIAG): malformed reply"
                    )
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", buf, off + 16)
                    if err:
                        raise OSError(
                            -err, f"sock_diag (UNIX_DIAG): {os.strerror(-err)}"
                        )
                elif mtype == SOCK_DIAG_BY_FAMILY:
                    d = _parse_diag(buf[off + 16 : off + ln])
                    if want is None or d.ino in want:
                        out[d.ino] = d
                off += (ln + 3) & ~3
            if not buf:
                return out


def holders(ino: int) -> list[tuple[int, int]]:
    """(pid, fd) of every fd on socket inode ``ino`` (error paths only: a
    /proc scan)."""
    link = f"socket:[{ino}]"
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/fd/{fd}") == link:
                        out.append((int(name), int(fd)))
    return sorted(out)
