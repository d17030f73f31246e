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
  together), and anything that needs the tasks to exist (``after_spawn``);
* ``show``: how an fd line names one of its files (``describe``) and the
  section it adds to the summary (``details``).

The machinery (freezing, the tree, the objhash batches, the barrier, the
record grammar) lives in checkpointer.py, restarter.py and image.py and
calls these hooks; it knows no kind by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pyckpt.abi import FileKind, HdrType
from pyckpt.records import Layout, Record

if TYPE_CHECKING:
    from pyckpt.checkpointer import _Collector, _FdRef
    from pyckpt.device import Context
    from pyckpt.image import File, Image, _Parser, _Writer
    from pyckpt.restarter import _Objects, _Plan

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

    # ---- checkpoint (the tree is frozen) ----

    def claims(self, kind: FileKind, r: _FdRef) -> bool:
        """Whether a file the module reported as ``kind`` (one of
        ``reported``) is this kind's: by default all of them.  ``r.link``
        (the /proc fd link) and ``r.stat`` cost only when asked."""
        return True

    def checkpoint(self, col: _Collector, f: File, r: _FdRef) -> bool:
        """Fill ``f`` (set f.kind to one of self.kinds; kind-specific state in
        f.extra).  Refuse with ``col.problem(r, why)`` and return False."""
        return True

    def collect(self, col: _Collector) -> None:
        """After every task's files: what spans files (col.image is full;
        ``col.of_kind(...)`` gives this kind's files without a pass over
        all of them).  The tasks' FD lists are not made yet: they are made
        of the walks once the tree runs again (``col.walked``, ``col.refs``
        and ``col.holders`` are there while it is frozen)."""

    # ---- the image ----

    def write_file(self, w: _Writer, image: Image, f: File, tag: int) -> None:
        """Records after f's FILE record (whose tag is ``tag``)."""

    def write_trailers(self, w: _Writer, image: Image) -> None:
        """Records after every task (w.file_tags: objref -> FILE tag)."""

    def read_file(self, p: _Parser, image: Image, f: File, rec: Record) -> None:
        """Read what write_file wrote (p.read / p.peek / p.ptag) into f."""

    def read_trailer(self, p: _Parser, image: Image, rec: Record) -> None:
        """One of self.trailers, met after the last task."""

    def check_model(self, image: Image) -> None:
        """Before writing: ValueError for what the records cannot express."""

    def check_image(self, image: Image) -> None:
        """After reading: ImageError for references across records."""

    # ---- restart (the coordinator, before the stubs exist) ----

    def check(self, files: list[File], plan: _Plan) -> None:
        """Before anything is created: RestartError for a file of this kind
        that cannot be restored (plan.warnings for what is only reported)."""

    def restore(self, objs: _Objects, files: list[File], plan: _Plan) -> None:
        """Make every file of this kind: objs.insert(f.objref, objs.keep(fd)),
        then objs.done() once a whole object is made (it may insert what was
        made so far and close the coordinator's fds on it)."""
        raise NotImplementedError(self.name)

    def after_spawn(
        self, ctx: Context, image: Image, plan: _Plan, timeout: float
    ) -> None:
        """Once every task holds its fds (epoll items need their targets)."""

    # ---- show ----

    def describe(self, f: File) -> str:
        """How an fd line names f (without its mode and flags)."""
        return FileKind(f.kind).name.lower()

    def details(self, image: Image) -> list[str]:
        """Lines of this kind's section in ``pyckpt show`` ([] for none)."""
        return []


def extra(f: File, cls: type[Any]) -> Any:
    """f.extra, checked to be a ``cls`` (the kind's own state)."""
    if not isinstance(f.extra, cls):
        raise ValueError(f"file {f.objref}: {cls.__name__} state missing")  # noqa: TRY004
    return f.extra
