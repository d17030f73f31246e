"""Names for people: open flags, epoll events and strings made printable,
for ``show``, ``ls`` and the kinds' own lines.  Stdlib only."""

from __future__ import annotations

import functools
import os
import select
import stat

from pyckpt.abi import FMode

# O_LARGEFILE is 0 in Python's os on 64-bit, but the kernel sets its real bit
# (asm-generic 0o100000) in every f_flags it reports on x86_64
_O_LARGEFILE = os.O_LARGEFILE or 0o100000


# composite flags first (O_SYNC includes O_DSYNC, O_TMPFILE O_DIRECTORY)
_O_FLAGS: list[tuple[str, int]] = [
    (name, getattr(os, name))
    for name in (
        "O_TMPFILE",
        "O_SYNC",
        "O_DSYNC",
        "O_CREAT",
        "O_EXCL",
        "O_NOCTTY",
        "O_TRUNC",
        "O_APPEND",
        "O_NONBLOCK",
        "O_ASYNC",
        "O_DIRECT",
        "O_DIRECTORY",
        "O_NOFOLLOW",
        "O_NOATIME",
        "O_CLOEXEC",
        "O_PATH",
    )
    if getattr(os, name, 0)
] + [("O_LARGEFILE", _O_LARGEFILE)]


_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}


_EPOLL_EVENTS: list[tuple[str, int]] = [
    (name, getattr(select, name))
    for name in (
        "EPOLLIN",
        "EPOLLPRI",
        "EPOLLOUT",
        "EPOLLERR",
        "EPOLLHUP",
        "EPOLLRDNORM",
        "EPOLLRDBAND",
        "EPOLLWRNORM",
        "EPOLLWRBAND",
        "EPOLLMSG",
        "EPOLLRDHUP",
        "EPOLLEXCLUSIVE",
        "EPOLLONESHOT",
        "EPOLLET",
    )
    if getattr(select, name, 0)
]


@functools.lru_cache(maxsize=4096)
def o_flags_names(flags: int) -> str:
    """``O_WRONLY|O_NONBLOCK``: an open file description's f_flags decoded
    (cached: an image has few distinct f_flags and many files)."""
    acc = flags & os.O_ACCMODE
    names = [_ACCMODE.get(acc, f"accmode {acc}")]
    rest = flags & ~os.O_ACCMODE
    for name, bit in _O_FLAGS:
        if rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:#o}")
    return "|".join(names)


def epoll_events_names(events: int) -> str:
    names = []
    for name, bit in _EPOLL_EVENTS:
        if events & bit:
            names.append(name)
            events &= ~bit
    if events or not names:
        names.append(f"{events:#x}")
    return "|".join(names)


def text(s: str | bytes) -> str:
    """A model string (surrogate-escaped bytes) as printable text: undecodable
    bytes as \\xNN, control characters as \\xNN or \\uNNNN, a backslash
    doubled, so the output is unambiguous and always encodes."""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:  # the usual case: as it is
        return s
    out = []
    for c in s:
        n = ord(c)
        if 0xDC80 <= n <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{n - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}")
    return "".join(out)


def quoted(s: str) -> str:
    return '"' + text(s).replace('"', '\\"') + '"'


def preview(data: bytes, n: int = 32) -> str:
    """The first bytes of a buffer, escaped and quoted."""
    more = "..." if len(data) > n else ""
    return '"' + "".join(_byte(b) for b in data[:n]) + '"' + more


def _byte(b: int) -> str:
    if b == 0x5C:
        return "\\\\"
    if b == 0x22:
        return '\\"'
    return chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}"


def dot_quoted(s: str) -> str:
    """A DOT quoted string: text() (no control characters), then DOT's own
    escapes for backslash and quote."""
    return '"' + text(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_label(*lines: str) -> str:
    """A multi-line quoted label (each line escaped, joined by DOT's \\n)."""
    return '"' + "\\n".join(dot_quoted(line)[1:-1] for line in lines) + '"'


def mode_name(f_mode: int) -> str:
    """An open file description's FMODE: read, write, read+write or -."""
    m = FMode(f_mode)
    return {FMode.READ: "read", FMode.WRITE: "write"}.get(m, "read+write" if m else "-")


def type_name(mode: int) -> str:
    """A stat(2) mode's file type, in words (messages)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return f"mode {mode:#o}"
