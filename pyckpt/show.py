"""Show a checkpoint image: a readable summary, a JSON decode, a Graphviz graph.

Like CRIU's ``crit`` and linux-cr's ``ckptinfo``: ``summary()`` prints the
tree, every task's fd table and the shared objects; ``to_json()`` is the raw
decode of every record (offsets, all fields) for tools; ``to_dot()`` draws who
shares which open file description, pipe and epoll target.  Stdlib only.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import errno
import functools
import os
import select
import signal
from typing import Any

from pyckpt import kinds
from pyckpt.abi import FileKind, FMode
from pyckpt.image import File, Image, ImageError, Record, Task, iter_records
from pyckpt.kinds.epoll import epolls
from pyckpt.kinds.pipe import pipes

__all__ = ["epoll_events_names", "o_flags_names", "summary", "to_dot", "to_json"]

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


def _text(s: str | bytes) -> str:
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


def _quoted(s: str) -> str:
    return '"' + _text(s).replace('"', '\\"') + '"'


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


def _time(t: float) -> str:
    try:
        when = datetime.datetime.fromtimestamp(t, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"{t} s"
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _mode(f: File) -> str:
    m = FMode(f.f_mode)
    return {FMode.READ: "read", FMode.WRITE: "write"}.get(m, "read+write" if m else "-")


def _kind(f: File) -> str:
    return FileKind(f.kind).name.lower()


def _file_text(f: File) -> str:
    """How an fd line names its file: ``pipe:[objref 2] read``, a path..."""
    kind = kinds.by_file_kind(f.kind)
    what = kind.describe(f) if kind is not None else _kind(f)
    return f"{_text(what)} {_mode(f)} {o_flags_names(f.f_flags)}"


def exit_text(status: int) -> str:
    """A wait(2) status as a shell would say it."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {name}{core}"
    return f"exit status {os.WEXITSTATUS(status)}"


def task_shape(t: Task) -> str:
    """What is unusual about a task: zombie, shared fd table, threads."""
    parts = []
    if t.exit_status is not None:
        parts.append(f"zombie ({exit_text(t.exit_status)}, not reaped)")
    if t.files_pid:
        parts.append(f"shares the fd table of task {t.files_pid} (CLONE_FILES)")
    if t.nr_threads > 1:
        parts.append(f"{t.nr_threads} threads (restart makes one)")
    return "; ".join(parts)


def summary(image: Image) -> str:
    """A readable account of the image, one object per line."""
    h = image.head
    kernel = f"{_text(h.sysname)} {_text(h.release)} {_text(h.machine)}"
    counts = (
        f"{len(image.tasks)} tasks, {len(image.files)} files, "
        f"{len(pipes(image))} pipes, {len(epolls(image))} epolls, "
        f"{len(image.errors)} errors"
    )
    lines = [
        f"image: {kernel} ({_text(h.version)})",
        f"frozen {_time(h.time)}, format {h.format_version}, abi {h.abi_version}",
        counts,
    ]
    texts: dict[int, str] = {}
    for t in image.tasks:
        lines.append("")
        lines.append(
            f"task {t.pid} ppid {t.ppid} sid {t.sid} pgid {t.pgid} "
            f"comm {_quoted(t.comm)}"
        )
        shape = task_shape(t)
        if shape:
            lines.append(f"  {shape}")
        lines.append(("  argv " + " ".join(_quoted(a) for a in t.argv)).rstrip())
        lines.append(f"  cwd  {_text(t.cwd)}")
        if t.exe:
            lines.append(f"  exe  {_text(t.exe)}")
        if t.root != "/":
            lines.append(f"  root {_text(t.root)}")
        groups = ",".join(map(str, t.groups)) or "-"
        lines.append(
            f"  uid {t.ruid}/{t.euid}/{t.suid}/{t.fsuid} "
            f"gid {t.rgid}/{t.egid}/{t.sgid}/{t.fsgid} groups {groups} "
            f"umask {t.umask:04o}" + (" no_new_privs" if t.no_new_privs else "")
        )
        if t.env:
            lines.append(f"  env  {len(t.env)} variables")
        for fd in t.fds:
            what = texts.get(fd.objref)
            if what is None:  # once per file, however many fds share it
                f = image.files.get(fd.objref)
                what = texts[fd.objref] = _file_text(f) if f else "(missing)"
            cloexec = " cloexec" if fd.cloexec else ""
            lines.append(f"  fd {fd.fd} -> objref {fd.objref} {what}{cloexec}")
    if image.files:
        lines += ["", "files:"]
        lines.append(
            f"  {'objref':>6} {'kind':<8} {'mode':<10} {'pos':>10}  flags  path"
        )
        for ref in sorted(image.files):
            f = image.files[ref]
            extra = []
            if f.pipe_objref:
                extra.append(f"pipe {f.pipe_objref}")
            if f.kind == FileKind.EVENTFD:
                sem = (
                    "semaphore unknown"
                    if f.efd_sem_unknown
                    else f"efd_flags {f.efd_flags:#x}"
                )
                extra.append(f"count {f.count} {sem}")
            if f.external:
                extra.append("external")
            tail = f" ({', '.join(extra)})" if extra else ""
            lines.append(
                f"  {ref:>6} {_kind(f):<8} {_mode(f):<10} {f.pos:>10}  "
                f"{o_flags_names(f.f_flags)}  {_text(f.path)}{tail}".rstrip()
            )
    for kind in kinds.KINDS:
        more = kind.details(image)
        if more:
            lines += ["", f"{kind.name}s:"]
            lines += [f"  {line}" for line in more]
    if image.errors:
        lines += ["", "errors:"]
        for e in image.errors:
            name = errno.errorcode.get(-e.err, str(e.err)) if e.err else "note"
            about = [
                f"{k} {v}"
                for k, v, none in (
                    ("pid", e.pid, 0),
                    ("fd", e.fd, -1),
                    ("objref", e.objref, 0),
                )
                if v != none
            ]
            where = f" ({', '.join(about)})" if about else ""
            lines.append(f"  {name}{where}: {_text(e.msg)}")
    return "\n".join(lines) + "\n"


# ---- JSON ---------------------------------------------------------------------

# the bytes fields of Record.fields that are text (paths, names, messages)
_TEXT = {
    "comm",
    "cwd",
    "path",
    "msg",
    "sysname",
    "release",
    "version",
    "machine",
    "exe",
    "root",
}


def _json_value(key: str, value: Any, out: dict[str, Any]) -> None:
    """One decoded field into ``out``: text as its exact str when it is UTF-8,
    else escaped by _text() plus ``<key>_base64`` (nothing is lost); buffers
    as base64; numbers and item dicts as they are."""
    if key in ("argv", "env"):
        out[key] = [_json_text(a) for a in value]
        if not all(_utf8(a) for a in value):
            out[f"{key}_base64"] = [base64.b64encode(a).decode() for a in value]
    elif isinstance(value, bytes) and key in _TEXT:
        out[key] = _json_text(value)
        if not _utf8(value):
            out[f"{key}_base64"] = base64.b64encode(value).decode()
    elif isinstance(value, bytes):
        out[f"{key}_base64"] = base64.b64encode(value).decode()
    else:
        out[key] = value


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _json_text(raw: bytes) -> str:
    return raw.decode("utf-8") if _utf8(raw) else _text(raw)


def record_json(rec: Record) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in rec.fields.items():
        _json_value(key, value, fields)
    return {
        "offset": rec.offset,
        "tag": rec.tag,
        "type": rec.type.name,
        "len": rec.len,
        "ptag": rec.ptag,
        "fields": fields,
    }


def to_json(image_bytes: bytes, strict: bool = True) -> dict[str, Any]:
    """The full decode: the head and every record with its offset and fields.

    ``strict``: an invalid image raises ImageError; otherwise the records up
    to the bad one are returned with ``"error": {"offset", "message"}``.
    """
    data = bytes(image_bytes)
    error: ImageError | None = None
    try:
        image = Image.from_bytes(data)
    except ImageError as e:
        if strict:
            raise
        image, error = None, e
    records: list[dict[str, Any]] = []
    try:
        for rec in iter_records(data):
            records.append(record_json(rec))
    except ImageError as e:
        if error is None:  # cannot happen: from_bytes saw it first
            error = e
    out: dict[str, Any] = {"size": len(data)}
    if image is not None:
        head = dataclasses.asdict(image.head)
        head.update(
            {k: _text(head[k]) for k in ("sysname", "release", "version", "machine")}
        )
        head["time_iso"] = _time(image.head.time)
        out["head"] = head
    else:
        out["head"] = None
    out["records"] = records
    if error is not None:
        out["error"] = {"offset": error.offset, "message": error.msg}
    return out


# ---- Graphviz -----------------------------------------------------------------


def _q(s: str) -> str:
    """A DOT quoted string: _text() (no control characters), then DOT's own
    escapes for backslash and quote."""
    return '"' + _text(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    """A multi-line quoted label (each line escaped, joined by DOT's \\n)."""
    return '"' + "\\n".join(_q(line)[1:-1] for line in lines) + '"'


def to_dot(image: Image) -> str:
    """A Graphviz digraph of the sharing graph.

    Nodes ``task_<pid>``, ``file_<objref>``, ``pipe_<objref>`` (ids stable
    across runs); bold edges parent -> child; one edge task -> file per fd
    (tasks sharing an open file description point at the same node); file ->
    pipe for pipe ends; dashed epoll -> target per epoll item.
    """
    out = [
        "digraph pyckpt {",
        "  rankdir=LR;",
        '  node [fontname="monospace"];',
    ]
    pids = {t.pid for t in image.tasks}
    for t in image.tasks:
        out.append(
            f"  task_{t.pid} [shape=box, label={_label(f'task {t.pid}', t.comm)}];"
        )
    for t in image.tasks:
        if t.ppid in pids:
            out.append(f"  task_{t.ppid} -> task_{t.pid} [style=bold];")
    for ref in sorted(image.files):
        f = image.files[ref]
        lines = [f"file {ref} {_kind(f)}", _mode(f)]
        if f.path:
            lines.append(f.path)
        shape = "hexagon" if f.kind == FileKind.EPOLL else "ellipse"
        out.append(f"  file_{ref} [shape={shape}, label={_label(*lines)}];")
    for ref in sorted(pipes(image)):
        p = pipes(image)[ref]
        label = _label(f"pipe {ref}", f"{len(p.data)}/{p.size} bytes")
        out.append(f"  pipe_{ref} [shape=diamond, label={label}];")
    for t in image.tasks:
        for fd in t.fds:
            out.append(
                f"  task_{t.pid} -> file_{fd.objref} [label={_q(f'fd {fd.fd}')}];"
            )
    for ref in sorted(image.files):
        f = image.files[ref]
        if f.pipe_objref and f.pipe_objref in pipes(image):
            end = _q(f"{_mode(f)} end")
            out.append(f"  file_{ref} -> pipe_{f.pipe_objref} [label={end}];")
    for ref in sorted(epolls(image)):
        for i in epolls(image)[ref].items:
            label = _q(f"tfd {i.tfd} {epoll_events_names(i.events)}")
            out.append(
                f"  file_{ref} -> file_{i.target} [style=dashed, label={label}];"
            )
    out.append("}")
    return "\n".join(out) + "\n"
