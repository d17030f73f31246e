"""What one kind of open file must say: linux-cr's ``ckpt_obj_ops``.

A kind (``pyckpt/kinds/pipe.py``, ``eventfd.py``, ...) is a ``Kind``
instance registered in ``pyckpt/kinds/__init__.py``.  It says, for its
files and nothing else:

* checkpoint: which files are its own (``claims``), what is saved of one
  (``checkpoint``, into the ``File`` and its ``extra``), and what spans
  files (``collect``, after every task: pipe buffers, epoll items, socket
  peers);
* the image: the record types it owns (``records``), written after its
  FILE (``write_file``) or after every task (``write_trailers``), read back
  by ``read_file`` / ``read_trailer``, then cross-checked (``check_image``);
* restart: how its files are made again, as fds handed to the objhash
  (``restore``, every file of the kind at once, so pairs are made
  together), anything that needs the tasks to exist (``after_spawn``), and
  what a task's stub does for it (``after_setsid``, ``at_release``);
* ``show``: how an fd line names one of its files (``describe``) and the
  section it adds to the summary (``details``).

This page is the whole contract.  A kind keeps its state in its own
objects (``File.extra`` per file, ``Image.extra[name]`` per image,
``Plan.extra[name]`` per restart), and is handed only what the Protocols
below name (``Collector``, ``FdRef``, ``Writer``, ``Reader``, ``Objects``,
``Plan``): the machinery (freezing, the tree, the objhash batches, the
barrier, the record grammar) implements them with private classes in
checkpointer.py, image.py and restarter.py, and knows no kind by name.
A kind imports only this contract, the floor below it (``model``,
``records``, ``device``, ``syscalls``, ``names``, ``stub``, ``sockdiag``,
``errors``, ``proc``) and, where one kind builds on another, that kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from pyckpt.abi import FileKind, HdrType
from pyckpt.device import Context, FileInfo, PipeState, TaskFd
from pyckpt.model import File, Image, Task
from pyckpt.records import Layout, Record
from pyckpt.stub import Creds

# ---- what a kind is handed --------------------------------------------------
# The machinery (checkpointer.py, image.py, restarter.py) implements these
# with private classes; a kind sees only what is named here.


class FdRef(Protocol):
    """One fd of one task while the tree is frozen.  The module's walk gave
    its number, objref and (for the first holder) the file's record; the
    rest costs a syscall and is read only when asked."""

    pid: int
    comm: str
    fd: int
    objref: int
    info: FileInfo | None  # the first holder's only
    pipe: PipeState | None  # an anonymous pipe, as the module saw it

    @property
    def link(self) -> str:
        """readlink of /proc/PID/fd/FD."""

    @property
    def fdinfo(self) -> str:
        """/proc/PID/fdinfo/FD."""

    @property
    def local(self) -> int:
        """Our own copy of the fd (pidfd_getfd), closed after the walk."""

    @property
    def stat(self) -> FileInfo | os.stat_result:
        """What fstat(2) says of the file."""

    def where(self) -> str:
        """``task PID (comm) fd N``, for messages."""


class CheckpointOptions(Protocol):
    allow_external: bool  # files also held outside the tree: marked, kept
    contents_limit: int  # bytes of a memfd or deleted file stored at most
    devices: list[str]  # character devices named with --device


class Collector(Protocol):
    """What checkpoint has gathered so far (the tree is frozen)."""

    ctx: Context
    image: Image
    opts: CheckpointOptions
    first: dict[int, FdRef]  # objref -> the fd that met it first
    info: dict[int, FileInfo]  # objref -> the module's record of it
    walked: list[tuple[int, str, list[TaskFd]]]  # (pid, comm, walk) per task
    problems: list[str]  # refusals; each kind adds through Kind.problem()

    @property
    def refs(self) -> list[FdRef]:
        """Every fd of the tree."""

    @property
    def holders(self) -> dict[int, list[FdRef]]:
        """objref -> every fd on that file."""

    def problem(self, r: FdRef, why: str) -> None:
        """Refuse the checkpoint because of r's file."""

    def own(self, fd: int) -> int:
        """Hand fd to the collector: closed after the walk, whatever happens."""

    def take(self, r: FdRef, n: int, what: str) -> None:
        """n bytes of r's data are read into the image: CheckpointError past
        the checkpoint's byte budget (--max-image-bytes)."""

    def stat_path(self, path: str) -> os.stat_result | None:
        """stat() of a path as this process sees it (cached)."""

    def prefetch(self, refs: Iterable[FdRef]) -> None:
        """Copy these fds in one batch (their ``local`` is then free)."""

    def of_kind(self, *kinds: FileKind) -> list[File]:
        """The files of these kinds, in objref order."""


class Writer(Protocol):
    """The image being written."""

    file_tags: dict[int, int]  # objref -> the tag of its FILE record
    defined: set[int]  # objrefs a kind's record defined (a PIPE)

    def add(
        self,
        rtype: HdrType,
        ptag: int,
        fields: dict[str, Any],
        var: dict[str, Any] | None = None,
    ) -> int:
        """Append one record; its tag (the reader's check runs on it)."""


class Definition(Protocol):
    """Where the reader met an objref's definition."""

    what: str  # "file", or a kind's object ("pipe")
    rec: Record
    trailer_at: int | None  # offset of its trailer (EPOLL), once seen


class Reader(Protocol):
    """The image being read: the grammar around a kind's records."""

    defs: dict[int, Definition]

    def read(self, expected: tuple[HdrType, ...], why: str = "") -> Record:
        """The next record, which must be of one of ``expected``."""

    def peek(self) -> Record | None:
        """The next record, not consumed."""

    def ptag(self, rec: Record, ptag: int, parent: str) -> None:
        """ImageError unless rec's parent tag is ``ptag``."""

    def child(self, file: Record, rtype: HdrType, why: str = "") -> Record:
        """The record of type ``rtype`` that must follow ``file``."""

    def define(self, objref: int, what: str, rec: Record) -> None:
        """An objref defined by a kind's record (ImageError if twice)."""


class Objects(Protocol):
    """Restart's objhash, as the kinds fill it."""

    def keep(self, fd: int) -> int:
        """The coordinator holds fd until the objects are handed over."""

    def insert(self, objref: int, fd: int) -> None:
        """fd's file is objref's object."""

    def done(self) -> None:
        """A whole object is made: what is kept may be inserted and closed."""

    def as_holder(self, creds: Creds, fn: Callable[[Objects], None]) -> None:
        """Run fn with the rights of a task that holds the objects it makes.

        fn gets an Objects to keep() and insert() into as usual, and runs in
        a helper process that has taken ``creds`` (groups, gids, uids: a
        non-root task's helper has no capability; its umask; non-dumpable;
        it dies with the coordinator) and closed every other fd: every path
        fn walks is walked with the task's rights, every socket it makes
        names the task as its maker.  What it inserted comes back over
        SCM_RIGHTS; what it appended to ``plan.warnings`` too; what it
        raised is raised here (a RestartError with its errno and message,
        an OSError with its errno).  For a task that ran as root
        (``creds.root``) fn runs in the coordinator, as before.  One helper
        per call: call it once per kind and credentials, not per file."""


class RestartOptions(Protocol):
    devices: list[str]  # character devices named again by the user
    stdio: str  # where the terminal's replacement comes from


class Plan(Protocol):
    """What restart will do, before anything is made."""

    image: Image
    tasks: list[Task]
    opts: RestartOptions
    relocate: bool  # files may have moved: reopened by path, not verified
    nofile: int  # the fd numbers a stub can hold
    warnings: list[str]  # reported, not refused
    extra: dict[str, Any]  # a kind's own plan, under its name

    def replace_fd(self, pid: int, fd: int, objref: int) -> None:
        """Task pid's fd gets objref's object, not its FD record's."""

    def holder(self, objref: int) -> Task:
        """The task whose rights make objref's object: the first task in
        image order that holds it on an fd (a file held by tasks of
        different users is made with the first one's rights), the tree's
        root task for a file no fd holds (an epoll's target only)."""

    def where(self, objref: int) -> str:
        """``task PID fd N`` of the holder's first fd on objref, for
        messages (``objref N`` when no fd holds it)."""


# a record-local check: raises ImageError (records.bad) for a wrong value
Check = Callable[[Record, str], None]


class Kind:
    """Defaults: no records of its own, nothing across files, no late step."""

    name: ClassVar[str] = ""
    # the ckpt.h enum ckpt_file_kind values this kind writes into FILE.kind
    kinds: ClassVar[tuple[FileKind, ...]] = ()
    # the kinds the module reports (REG, CHR, SOCK, ANON, ...) among whose
    # files this kind finds its own: claims() is asked only of those
    reported: ClassVar[frozenset[FileKind]] = frozenset()
    # record types it owns: (type, layout, record-local check)
    records: ClassVar[tuple[tuple[HdrType, Layout, Check], ...]] = ()
    # of those, the ones written after every task (EPOLL): read by read_trailer
    trailers: ClassVar[tuple[HdrType, ...]] = ()
    # its files may also be held outside the tree without a refusal: restart
    # makes them anew (a terminal, /dev/null), so no sharing is lost that it
    # would have kept (they are marked external, nothing more)
    shared_outside: ClassVar[bool] = False
    # its files are ends of one object that FILE.pipe_objref names (a pipe)
    ends: ClassVar[bool] = False
    # its reader checks across records more than its check_model() mirrors:
    # the writer parses a written image that holds its files once more
    reparse: ClassVar[bool] = False
    # the restart limit its saved data counts against: (Limits field, what);
    # data_bytes() counts it
    limit: ClassVar[tuple[str, str] | None] = None
    # the FILE record's flag bits that are its own (file_fields): (name, bit)
    file_flags: ClassVar[tuple[tuple[str, int], ...]] = ()
    # the shape of its files' nodes in the graph of ``show --dot``
    dot_shape: ClassVar[str] = "ellipse"

    def problem(self, col: Collector, r: FdRef, why: str) -> None:
        """Refuse the checkpoint because of r's file, the kind's name first
        (CRIU's LOG_PREFIX)."""
        col.problem(r, f"{self.name}: {why}")

    # ---- checkpoint (the tree is frozen) ----

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        """Whether a file the module reported as ``kind`` (one of
        ``reported``) is this kind's: by default all of them.  ``r.link``
        (the /proc fd link) and ``r.stat`` cost only when asked."""
        return True

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        """Fill ``f`` (set f.kind to one of self.kinds; kind-specific state in
        f.extra).  Refuse with ``self.problem(col, r, why)`` and return
        False."""
        return True

    def collect(self, col: Collector) -> None:
        """After every task's files: what spans files (col.image is full;
        ``col.of_kind(...)`` gives this kind's files without a pass over
        all of them).  The tasks' FD lists are not made yet: they are made
        of the walks once the tree runs again (``col.walked``, ``col.refs``
        and ``col.holders`` are there while it is frozen)."""

    # ---- the image ----

    def file_fields(self, f: File) -> dict[str, int]:
        """The FILE record's fields that are this kind's (an eventfd's
        count), and under "flags" its own flag bits (``file_flags``); read
        back by ``read_file`` from the FILE record it is handed."""
        return {}

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        """Records after f's FILE record (whose tag is ``tag``)."""

    def write_trailers(self, w: Writer, image: Image) -> None:
        """Records after every task (w.file_tags: objref -> FILE tag)."""

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        """Read what write_file wrote (p.read / p.peek / p.ptag) into f."""

    def read_trailer(self, p: Reader, image: Image, rec: Record) -> None:
        """One of self.trailers, met after the last task."""

    def check_model(self, image: Image) -> None:
        """Before writing: ValueError for what the records cannot express."""

    def check_image(self, image: Image) -> None:
        """After reading: ImageError for references across records."""

    # ---- restart (the coordinator, before the stubs exist) ----

    def data_bytes(self, image: Image) -> int:
        """The saved bytes that count against ``limit``."""
        return 0

    def check(self, files: list[File], plan: Plan) -> None:
        """Before anything is created: RestartError for a file of this kind
        that cannot be restored (plan.warnings for what is only reported)."""

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        """Make every file of this kind: objs.insert(f.objref, objs.keep(fd)),
        then objs.done() once a whole object is made (it may insert what was
        made so far and close the coordinator's fds on it)."""
        raise NotImplementedError(self.name)

    def after_spawn(
        self, ctx: Context, image: Image, plan: Plan, timeout: float
    ) -> None:
        """Once every task holds its fds (epoll items need their targets)."""

    # ---- restart, in each task's stub ----

    def after_setsid(
        self,
        plan: Plan,
        task: Task,
        fetch: Callable[[int], int],
        report: Callable[[str], None],
    ) -> None:
        """In the stub of a new session leader, before it forks its children
        (they inherit a controlling terminal only from a parent that has
        it): ``fetch(objref)`` gives an fd of an object (the caller closes
        it), ``report(line)`` a note for the restart's result."""

    def at_release(self, plan: Plan, task: Task) -> None:
        """In each stub, released, just before the exec.  Nothing is left
        to report to: best effort."""

    # ---- show ----

    def describe(self, f: File) -> str:
        """How an fd line names f (without its mode and flags)."""
        return FileKind(f.kind).name.lower()

    def file_notes(self, f: File) -> list[str]:
        """What the summary's files table adds for f."""
        return []

    def counts(self, image: Image) -> str:
        """The summary's count of this kind's own objects ("3 pipes"), or ""."""
        return ""

    def dot(self, image: Image) -> list[str]:
        """Its own nodes and edges in the graph of ``show --dot`` (file
        nodes are ``file_OBJREF``), after the tasks' and files'."""
        return []

    def details(self, image: Image) -> list[str]:
        """Lines of this kind's section in ``pyckpt show`` ([] for none)."""
        return []


def by_holder(plan: Plan, files: list[File]) -> list[tuple[Creds, list[File]]]:
    """files grouped by the credentials of their holders (one helper per
    group: ``Objects.as_holder``), each group in the order given."""
    groups: dict[Creds, list[File]] = {}
    for f in files:
        groups.setdefault(Creds.of(plan.holder(f.objref)), []).append(f)
    return list(groups.items())


def extra(f: File, cls: type[Any]) -> Any:
    """f.extra, checked to be a ``cls`` (the kind's own state)."""
    if not isinstance(f.extra, cls):
        raise ValueError(f"file {f.objref}: {cls.__name__} state missing")  # noqa: TRY004
    return f.extra
