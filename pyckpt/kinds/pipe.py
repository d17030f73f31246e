"""Pipes and named FIFOs (the half-closed pipe race lives here).

Checkpoint: every end is a FILE whose ``pipe_objref`` names the pipe (the
module's objref for the pipe inode, shared by the ends); the buffer is
copied with ``tee`` into a scratch pipe, never consumed, and written once as
the PIPE record after the pipe's first FILE, with which ends are closed
everywhere.  Restart is linux-cr's: one ``pipe2()``, each FILE its end, and
the end opposite to the first FILE kept in the hash under the pipe objref;
a FIFO is reopened by path behind an O_RDWR holder that never blocks.
"""

from __future__ import annotations

import fcntl
import functools
import os
import select
import termios
from dataclasses import dataclass

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.errors import CheckpointError, ImageError, RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    by_holder,
)
from pyckpt.kinds.regular import SETFL, check_path, open_verified, record_path
from pyckpt.model import File, Image
from pyckpt.names import dot_label, dot_quoted, mode_name, preview
from pyckpt.records import Layout, Record, Var, bad
from pyckpt.syscalls import tee

PIPE_KINDS = frozenset({FileKind.PIPE, FileKind.FIFO})
_READ, _WRITE = int(FMode.READ), int(FMode.WRITE)


@dataclass
class Pipe:
    """PIPE: a pipe's buffer, shared by its ends (their ``pipe_objref``)."""

    objref: int
    size: int  # F_GETPIPE_SZ
    data: bytes = b""
    no_reader: bool = False  # read end closed everywhere
    no_writer: bool = False  # write end closed everywhere


def pipes(image: Image) -> dict[int, Pipe]:
    """The image's pipes by objref: this kind's state, kept in the image."""
    return image.extra.setdefault("pipe", {})


def _check_pipe(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["flags"] & ~(lib.CKPT_PIPE_NO_READER | lib.CKPT_PIPE_NO_WRITER):
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")


def _poll(fd: int) -> int:
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLOUT)
    events = p.poll(0)
    return events[0][1] if events else 0


def _pipe(
    scratch: _Tee, objref: int, reader: FdRef | None, writer: FdRef | None
) -> Pipe:
    """The pipe's state; its data once scratch.flush() has run."""
    any_end = reader or writer
    assert any_end is not None  # each FILE is one end or the other
    state = any_end.pipe
    if state is not None:
        # an anonymous pipe: the module's walk told its state
        pipe = Pipe(objref, state.size, b"", state.no_reader, state.no_writer)
        if reader is not None:
            scratch.add(pipe, reader, state.nbytes)
        return pipe
    # a FIFO: asked through copies of its ends
    pipe = Pipe(objref, fcntl.fcntl(any_end.local, fcntl.F_GETPIPE_SZ))
    if reader is not None:
        scratch.add(pipe, reader, _buffered(reader))
        pipe.no_writer = bool(_poll(reader.local) & select.POLLHUP)
    if writer is not None:
        pipe.no_reader = bool(_poll(writer.local) & select.POLLERR)
    return pipe


# what the scratch pipe is grown to: its slots hold the buffers of many
# pipes (tee links buffers, it copies no data), read back in one read()
SCRATCH_SIZE = 1 << 20


class _Tee:
    """Copies of pipes' buffers, left in place: each pipe is tee'd into one
    scratch pipe behind the ones before it, and the scratch is read out in
    one read() when full and at the end (the tree is frozen, every syscall
    counts: two per pipe before)."""

    def __init__(self, col: Collector) -> None:
        self.col = col
        self.ends: tuple[int, int] | None = None
        self.size = 0
        self.pending: list[tuple[Pipe, int]] = []  # in the scratch, in order
        self.held = 0  # their bytes

    def add(self, pipe: Pipe, reader: FdRef, want: int) -> None:
        """pipe.data: the want bytes buffered at the head of reader's pipe
        (filled by flush())."""
        if want == 0:
            return
        self.col.take(reader, want, "its buffered bytes")  # the byte budget
        if self.ends is None:
            sr, sw = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.ends = self.col.own(sr), self.col.own(sw)
        sw = self.ends[1]
        need = max(pipe.size, want)
        if self.size < need:
            # at least as many slots as the source: one tee copies all of it
            try:
                self.size = fcntl.fcntl(sw, fcntl.F_SETPIPE_SZ, max(need, SCRATCH_SIZE))
            except PermissionError:  # above pipe-max-size without the right
                self.size = fcntl.fcntl(sw, fcntl.F_SETPIPE_SZ, need)
        copied = self._tee(reader, want)
        if copied != want and self.pending:
            # the scratch is full: read it out, drop the part copied, again
            self._read(copied)
            copied = self._tee(reader, want)
        if copied != want:
            raise CheckpointError(
                f"{reader.where()}: {reader.link}: tee copied {copied} of the "
                f"{want} buffered bytes"
            )
        self.pending.append((pipe, want))
        self.held += want

    def _tee(self, reader: FdRef, want: int) -> int:
        assert self.ends is not None
        try:
            # tee always starts at the head of the source: one call, no retry
            return tee(reader.local, self.ends[1], want)
        except BlockingIOError:
            return 0

    def flush(self) -> None:
        """Read the scratch out into the pending pipes' data."""
        self._read(0)

    def _read(self, extra: int) -> None:
        """Read the pending pipes' bytes, then extra bytes to drop."""
        if self.ends is None:
            return
        left, chunks = self.held + extra, []
        while left:
            chunk = os.read(self.ends[0], left)
            chunks.append(chunk)
            left -= len(chunk)
        data, at = b"".join(chunks), 0
        for pipe, n in self.pending:
            pipe.data = data[at : at + n]
            at += n
        self.pending.clear()
        self.held = 0


def _buffered(reader: FdRef) -> int:
    buf = bytearray(4)
    fcntl.ioctl(reader.local, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def _set_pipe_size(fd: int, p: Pipe | None) -> None:
    if p is None:
        return
    cur = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    if p.size and p.size != cur:
        cur = fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, p.size)
    if len(p.data) > cur:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, len(p.data))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _end_flags(f: File) -> int:
    return os.O_RDONLY if FMode(f.f_mode) == FMode.READ else os.O_WRONLY


def _make_pipe(objs: Objects, ref: int, files: list[File], p: Pipe | None) -> None:
    """linux-cr's pipe restore: one pipe, each File its end, and the end
    opposite to the first File kept in the hash under the pipe objref."""
    direct = os.O_DIRECT if any(f.f_flags & os.O_DIRECT for f in files) else 0
    r, w = os.pipe2(os.O_CLOEXEC | direct)
    objs.keep(r)
    objs.keep(w)
    _set_pipe_size(w, p)
    if p is not None and p.data:
        _write_all(w, p.data)
    used: set[int] = set()
    for f in files:
        end = r if FMode(f.f_mode) == FMode.READ else w
        fd, status = end, 0  # pipe2() sets none of SETFL's flags
        if end in used:
            # another open file description of the same end (the image saw
            # two struct files): reopen through /proc, as open(2) of a FIFO
            status = os.O_NONBLOCK
            fd = objs.keep(os.open(f"/proc/self/fd/{end}", _end_flags(f) | status))
        used.add(end)
        if f.f_flags & SETFL != status:
            fcntl.fcntl(fd, fcntl.F_SETFL, f.f_flags & SETFL)
        objs.insert(f.objref, fd)
    if files:
        other = w if FMode(files[0].f_mode) == FMode.READ else r
        objs.insert(ref, other)


def _make_fifo(
    objs: Objects, ref: int, files: list[File], p: Pipe | None, relocate: bool
) -> None:
    """A named FIFO: an O_RDWR holder under the pipe objref (it never blocks
    and refills the data), each File opened by path with its own flags."""
    path = files[0].path
    holder = objs.keep(open_verified(files[0], os.O_RDWR, relocate))
    fcntl.fcntl(holder, fcntl.F_SETFL, os.O_NONBLOCK)
    _set_pipe_size(holder, p)
    if p is not None and p.data:
        try:
            _write_all(holder, p.data)
        except BlockingIOError:
            raise RestartError(f"pipe {ref}: FIFO {path} is full") from None
    for f in files:
        # the holder is a reader and a writer: no open here blocks or fails
        fd = objs.keep(open_verified(f, f.f_flags, relocate))
        objs.insert(f.objref, fd)
    objs.insert(ref, holder)


def _make_groups(objs: Objects, groups: dict[int, list[File]], plan: Plan) -> None:
    for ref, group in groups.items():
        p = pipes(plan.image).get(ref)
        try:
            if group[0].kind == FileKind.PIPE:
                _make_pipe(objs, ref, group, p)
            else:
                _make_fifo(objs, ref, group, p, plan.relocate)
        except OSError as e:
            where = group[0].path or "pipe"
            raise RestartError(
                f"pipe {ref} (objref {group[0].objref}): cannot restore "
                f"{where}: {e.strerror}"
            ) from e
        objs.done()  # a pipe's ends go in together


class PipeKind(Kind):
    name = "pipe"
    ends = True
    limit = ("pipe_bytes", "bytes of pipe data")
    kinds = (FileKind.PIPE, FileKind.FIFO)
    reported = frozenset(kinds)
    records = (
        (
            HdrType.PIPE,
            Layout(
                "struct ckpt_hdr_pipe",
                (Var("data", "data_len", "CKPT_PIPE_DATA_MAX"),),
            ),
            _check_pipe,
        ),
    )

    # ---- checkpoint ----

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        why = record_path(col, f, r) if f.kind == FileKind.FIFO else ""
        if why:
            self.problem(col, r, why)
            return False
        f.pipe_objref = col.info[f.objref].inode_objref
        return True

    def collect(self, col: Collector) -> None:
        # pipe -> [reader, writer]: the first holder of its first file open
        # for reading, and for writing (int modes: a Flag's & is a call)
        ends: dict[int, list[FdRef | None]] = {}
        first, info = col.first, col.info
        for f in col.of_kind(*PIPE_KINDS):
            objref = f.objref
            end = ends.setdefault(f.pipe_objref, [None, None])
            mode = int(info[objref].f_mode)
            if end[0] is None and mode & _READ:
                end[0] = first[objref]
            if end[1] is None and mode & _WRITE:
                end[1] = first[objref]
        # the readers of anonymous pipes with data: copied in one batch
        col.prefetch(
            r
            for r, _ in ends.values()
            if r is not None and r.pipe is not None and r.pipe.nbytes
        )
        scratch = _Tee(col)
        for pipe_objref, (reader, writer) in ends.items():
            pipes(col.image)[pipe_objref] = _pipe(scratch, pipe_objref, reader, writer)
        scratch.flush()

    # ---- the image ----

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        if f.pipe_objref in w.defined:
            return
        w.defined.add(f.pipe_objref)
        pipe = pipes(image)[f.pipe_objref]
        flags = (lib.CKPT_PIPE_NO_READER if pipe.no_reader else 0) | (
            lib.CKPT_PIPE_NO_WRITER if pipe.no_writer else 0
        )
        w.add(
            HdrType.PIPE,
            tag,
            {"objref": pipe.objref, "flags": flags, "size": pipe.size},
            {"data": pipe.data},
        )

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        pobj = f.pipe_objref
        known = p.defs.get(pobj)
        if known is None:
            pipe = p.read((HdrType.PIPE,), f"FILE with a new pipe_objref {pobj}")
            p.ptag(pipe, rec.tag, "its FILE")
            pf = pipe.fields
            if pf["objref"] != pobj:
                raise ImageError(
                    pipe.offset,
                    f"PIPE record: objref {pf['objref']} differs from its FILE's "
                    f"pipe_objref {pobj}",
                )
            p.define(pobj, "pipe", pipe)
            pipes(image)[pobj] = Pipe(
                objref=pobj,
                size=pf["size"],
                data=pf["data"],
                no_reader=bool(pf["flags"] & lib.CKPT_PIPE_NO_READER),
                no_writer=bool(pf["flags"] & lib.CKPT_PIPE_NO_WRITER),
            )
        elif known.what != "pipe":
            raise ImageError(
                rec.offset, f"FILE record: pipe_objref {pobj} is a file's objref"
            )

    def check_model(self, image: Image) -> None:
        both = image.files.keys() & pipes(image).keys()
        if both:
            raise ValueError(f"objrefs {sorted(both)} are both a file and a pipe")
        for key, pipe in pipes(image).items():
            if key != pipe.objref:
                raise ValueError(f"Image.pipes[{key}] has objref {pipe.objref}")
        used: set[int] = set()
        for f in image.files.values():
            if f.kind in PIPE_KINDS:
                if f.pipe_objref not in pipes(image):
                    raise ValueError(
                        f"file {f.objref}: pipe_objref {f.pipe_objref} not in "
                        "Image.pipes"
                    )
                used.add(f.pipe_objref)
        unused = sorted(pipes(image).keys() - used)
        if unused:
            raise ValueError(
                f"pipes {unused} are referenced by no file: cannot be written"
            )

    # ---- restart ----

    def _groups(self, files: list[File]) -> dict[int, list[File]]:
        groups: dict[int, list[File]] = {}
        for f in files:
            groups.setdefault(f.pipe_objref, []).append(f)
        return groups

    def check(self, files: list[File], plan: Plan) -> None:
        image = plan.image
        for ref, group in self._groups(files).items():
            for f in group:
                where = f"objref {f.objref}"
                if ref <= 0 or ref in image.files:
                    raise RestartError(f"{where}: bad pipe objref {ref}")
                if f.kind != group[0].kind:
                    raise RestartError(f"{where}: pipe {ref} mixes kinds")
                if f.kind == FileKind.FIFO:
                    check_path(f)
                    continue
                if ref not in pipes(image):
                    raise RestartError(f"{where}: no PIPE record {ref}")
                if FMode(f.f_mode) not in (FMode.READ, FMode.WRITE):
                    raise RestartError(f"{where}: a pipe end is read or write only")

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        # anonymous pipes here; a named FIFO is opened by path with the
        # rights of its first end's holder (Objects.as_holder)
        groups = self._groups(files)
        anon = {ref: g for ref, g in groups.items() if g[0].kind == FileKind.PIPE}
        _make_groups(objs, anon, plan)
        fifos = [g[0] for g in groups.values() if g[0].kind != FileKind.PIPE]
        ref_of = {g[0].objref: ref for ref, g in groups.items()}
        for creds, firsts in by_holder(plan, fifos):
            mine = {ref_of[f.objref]: groups[ref_of[f.objref]] for f in firsts}
            objs.as_holder(
                creds, functools.partial(_make_groups, groups=mine, plan=plan)
            )

    def data_bytes(self, image: Image) -> int:
        return sum(len(p.data) for p in pipes(image).values())

    # ---- show: pipes are the kind's own objects ----

    def counts(self, image: Image) -> str:
        return f"{len(pipes(image))} pipes"

    def dot(self, image: Image) -> list[str]:
        """A diamond per pipe, an edge from each end's file to it."""
        out = []
        for ref, p in sorted(pipes(image).items()):
            label = dot_label(f"pipe {ref}", f"{len(p.data)}/{p.size} bytes")
            out.append(f"  pipe_{ref} [shape=diamond, label={label}];")
        for ref, f in sorted(image.files.items()):
            if f.kind in self.kinds and f.pipe_objref in pipes(image):
                end = dot_quoted(f"{mode_name(f.f_mode)} end")
                out.append(f"  file_{ref} -> pipe_{f.pipe_objref} [label={end}];")
        return out

    # ---- show ----

    def describe(self, f: File) -> str:
        what = f"{FileKind(f.kind).name.lower()}:[objref {f.pipe_objref}]"
        return f"{what} {f.path}" if f.path else what

    def details(self, image: Image) -> list[str]:

        lines = []
        for ref in sorted(pipes(image)):
            p = pipes(image)[ref]
            ends = [
                n
                for n, on in (("no reader", p.no_reader), ("no writer", p.no_writer))
                if on
            ]
            half = f" ({', '.join(ends)})" if ends else ""
            lines.append(
                f"pipe {ref}: size {p.size}, {len(p.data)} bytes buffered "
                f"{preview(p.data)}{half}"
            )
        return lines


KIND = PipeKind()
