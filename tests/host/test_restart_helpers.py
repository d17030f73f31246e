"""restarter.py's helpers (Objects.as_holder): a fork that takes a task's
credentials, makes objects, and hands their fds back over SCM_RIGHTS, with
its warnings and errors.  As root the helper takes uid 65534; as anyone
else, that user's own ids (no privilege needed to take them again)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

import pytest

from pyckpt.errors import RestartError
from pyckpt.kinds.base import Objects
from pyckpt.restarter import _Objects, _Plan
from pyckpt.stub import Creds

SO_PEERCRED = 17


class _Ctx:
    """The objhash as a list (_Objects.flush inserts above 256 fds)."""

    def __init__(self) -> None:
        self.inserted: list[int] = []

    def insert_many(self, pairs: list[tuple[int, int]]) -> None:
        self.inserted += [ref for ref, _ in pairs]


def _user() -> Creds:
    if os.geteuid() == 0:
        return Creds((65534,) * 4, (65534,) * 4, ())
    uid, gid = os.geteuid(), os.getegid()
    return Creds((uid,) * 4, (gid,) * 4, tuple(sorted(set(os.getgroups()))))


def _objs() -> _Objects:
    plan = _Plan(image=None, tasks=[], children={}, argv={}, nofile=1024)  # type: ignore[arg-type]
    return _Objects(_Ctx(), plan)  # type: ignore[arg-type]


def test_helper_makes_objects_as_the_user() -> None:
    creds = _user()
    objs = _objs()

    def make(o: Objects) -> None:
        a, b = socket.socketpair()
        o.insert(1, o.keep(a.detach()))
        o.insert(2, o.keep(b.detach()))
        m = o.keep(os.memfd_create("x", os.MFD_CLOEXEC))
        o.insert(3, m)
        o.insert(4, m)  # one fd, two objrefs
        objs.plan.warnings.append(f"made by {os.geteuid()}")
        o.done()

    try:
        objs.as_holder(creds, make)
        got = dict(objs.inserts)
        assert sorted(got) == [1, 2, 3, 4] and got[3] == got[4]
        assert objs.helpers == 1
        with socket.socket(fileno=os.dup(got[1])) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12)
        assert struct.unpack("3i", raw)[1:] == (creds.uid, creds.gids[1])
        assert os.fstat(got[3]).st_uid == creds.uid
        assert objs.plan.warnings == [f"made by {creds.uid}"]
    finally:
        objs.close()


def test_helper_errors_come_back() -> None:
    objs = _objs()

    def refuse(o: Objects) -> None:
        o.keep(os.memfd_create("x"))
        raise RestartError("objref 7: no", errno.EACCES)

    def fail(o: Objects) -> None:
        os.open("/nonexistent/x", os.O_RDONLY)

    with pytest.raises(RestartError, match="objref 7: no") as e:
        objs.as_holder(_user(), refuse)
    assert e.value.errno == errno.EACCES
    with pytest.raises(FileNotFoundError):
        objs.as_holder(_user(), fail)
    assert objs.own == []


def test_helper_sends_many_fds_in_packets() -> None:
    objs = _objs()

    def many(o: Objects) -> None:
        for ref in range(1, 601):
            o.insert(ref, o.keep(os.eventfd(0, os.EFD_CLOEXEC)))
            o.done()

    try:
        objs.as_holder(_user(), many)
        done = objs.ctx.inserted + [ref for ref, _ in objs.inserts]  # type: ignore[attr-defined]
        assert done == list(range(1, 601))
    finally:
        objs.close()


def test_root_runs_in_the_coordinator() -> None:
    objs = _objs()
    seen = []
    objs.as_holder(Creds((0,) * 4, (0,) * 4, ()), seen.append)
    assert seen == [objs] and objs.helpers == 0


def test_helper_cost() -> None:
    """Not a timing assertion: the cost per helper, printed (-s)."""
    objs = _objs()
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        objs.as_holder(_user(), lambda o: o.insert(1, o.keep(os.eventfd(0))))
        objs.close()
        objs.inserts = []
    per = (time.perf_counter() - t0) / n
    print(f"helper: {per * 1e3:.2f} ms each (fork, credentials, one fd back)")
    assert objs.helpers == n
