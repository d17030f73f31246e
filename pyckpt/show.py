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
import os
import signal
from typing import Any

from pyckpt import kinds
from pyckpt.abi import FileKind
from pyckpt.image import File, Image, ImageError, Record, Task, iter_records
from pyckpt.names import (
    dot_label,
    dot_quoted,
    mode_name,
    o_flags_names,
    quoted,
    text,
)

__all__ = ["summary", "to_dot", "to_json"]


def _time(t: float) -> str:
    try:
        when = datetime.datetime.fromtimestamp(t, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"{t} s"
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _mode(f: File) -> str:
    return mode_name(f.f_mode)


def _kind(f: File) -> str:
    return FileKind(f.kind).name.lower()


def _file_text(f: File) -> str:
    """How an fd line names its file: ``pipe:[objref 2] read``, a path..."""
    kind = kinds.by_file_kind(f.kind)
    what = kind.describe(f) if kind is not None else _kind(f)
    return f"{text(what)} {_mode(f)} {o_flags_names(f.f_flags)}"


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
    kernel = f"{text(h.sysname)} {text(h.release)} {text(h.machine)}"
    counts = ", ".join(
        [
            f"{len(image.tasks)} tasks",
            f"{len(image.files)} files",
            *filter(None, (k.counts(image) for k in kinds.KINDS)),
            f"{len(image.errors)} errors",
        ]
    )
    lines = [
        f"image: {kernel} ({text(h.version)})",
        f"frozen {_time(h.time)}, format {h.format_version}, abi {h.abi_version}",
        counts,
    ]
    texts: dict[int, str] = {}
    for t in image.tasks:
        lines.append("")
        lines.append(
            f"task {t.pid} ppid {t.ppid} sid {t.sid} pgid {t.pgid} "
            f"comm {quoted(t.comm)}"
        )
        shape = task_shape(t)
        if shape:
            lines.append(f"  {shape}")
        lines.append(("  argv " + " ".join(quoted(a) for a in t.argv)).rstrip())
        lines.append(f"  cwd  {text(t.cwd)}")
        if t.exe:
            lines.append(f"  exe  {text(t.exe)}")
        if t.root != "/":
            lines.append(f"  root {text(t.root)}")
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
            owner = kinds.by_file_kind(f.kind)
            if owner is not None:
                extra += owner.file_notes(f)
            if f.external:
                extra.append("external")
            tail = f" ({', '.join(extra)})" if extra else ""
            lines.append(
                f"  {ref:>6} {_kind(f):<8} {_mode(f):<10} {f.pos:>10}  "
                f"{o_flags_names(f.f_flags)}  {text(f.path)}{tail}".rstrip()
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
            lines.append(f"  {name}{where}: {text(e.msg)}")
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
    else escaped by text() plus ``<key>_base64`` (nothing is lost); buffers
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
    return raw.decode("utf-8") if _utf8(raw) else text(raw)


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
            {k: text(head[k]) for k in ("sysname", "release", "version", "machine")}
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
            f"  task_{t.pid} [shape=box, label={dot_label(f'task {t.pid}', t.comm)}];"
        )
    for t in image.tasks:
        if t.ppid in pids:
            out.append(f"  task_{t.ppid} -> task_{t.pid} [style=bold];")
    for ref in sorted(image.files):
        f = image.files[ref]
        lines = [f"file {ref} {_kind(f)}", _mode(f)]
        if f.path:
            lines.append(f.path)
        owner = kinds.by_file_kind(f.kind)
        shape = owner.dot_shape if owner is not None else "ellipse"
        out.append(f"  file_{ref} [shape={shape}, label={dot_label(*lines)}];")
    for t in image.tasks:
        for fd in t.fds:
            out.append(
                f"  task_{t.pid} -> file_{fd.objref} [label={dot_quoted(f'fd {fd.fd}')}];"
            )
    for k in kinds.KINDS:
        out += k.dot(image)
    out.append("}")
    return "\n".join(out) + "\n"
