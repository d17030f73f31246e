"""Every failure path of every ioctl, through the module's fail_nth knob.

Debian's kernel has no FAILSLAB, so ckpt.ko carries its own knob
(/sys/module/ckpt/parameters/fail_nth, ckpt.h): N makes the Nth allocation,
fd reservation or user copy of the next ioctl fail.  For each ioctl below,
N walks 1, 2, ... until the call meets no forced failure; each time the call
must fail cleanly (or, where a failure only costs speed, succeed), leave the
context as it was (stats, fds, tags, error log but for its own entries), a
retry must give the result of a run without faults, and the module-wide
live counts must come back to zero once the context is closed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

import pytest
from vmhelpers import PARAMS, Fds, fail_fired, write_param
from vmhelpers import mod_counts as _mod_counts

from pyckpt import CkptError, Context, ObjType, Policy

FORCED: dict[str, int] = {}  # case -> failures forced (all clean)
# cumulative counters: a failed call may grab and drop, never keep
SKIP_STATS = {"lookups", "probes", "mod_test_grabs", "mod_test_drops", "mod_test_frees"}


def mod_counts(observer: Context) -> dict[str, int]:
    """The module-wide live counts (not the cumulative ones)."""
    counts = _mod_counts(observer)
    return {k: v for k, v in counts.items() if k not in SKIP_STATS}


def _nr_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _snapshot(ctx: Context) -> dict[str, Any]:
    st = ctx.stats()
    snap = {k: v for k, v in vars(st).items() if k not in SKIP_STATS}
    snap["fds"] = _nr_fds()
    snap["tags"] = ctx.tags()
    return snap


def _same_file(fd: int, orig: int) -> bool:
    """Is the fetched fd on orig's open file (pipes: its inode)? Closes fd."""
    a, b = os.fstat(fd), os.fstat(orig)
    flags = os.get_blocking(fd) == os.get_blocking(orig)
    os.close(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and flags


# ---- the cases: (prep(ctx, fds) -> state, call(ctx, state) -> comparable) -----

Prep = Callable[[Context, Fds], Any]
Call = Callable[[Context, Any], Any]


def _pipe(fds: Fds) -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK)
    fds.add(r, w)
    return r, w


def _restart_pipe(c: Context, f: Fds) -> tuple[int, int]:
    r, w = _pipe(f)
    c.insert(1, r)
    c.insert(2, w)
    return r, w


def _checkpoint_pipe(c: Context, f: Fds) -> tuple[int, int]:
    r, w = _pipe(f)
    c.lookup_add(r)
    return r, w


def _anon(res: Any) -> Any:
    """A lookup result without its inode number: each case makes a new pipe."""
    if isinstance(res, list):
        return [_anon(r) for r in res]
    if res.file is None:
        return res
    return res._replace(file=res.file._replace(st_ino=0))


def _test_obj(c: Context, f: Fds) -> int:
    t = c.test_new()
    c.insert(1, t, ObjType.TEST)
    return t


def _logged(c: Context, f: Fds) -> None:
    c.defer_log(7)
    c.defer_log(8)


def _an_error(c: Context, f: Fds) -> None:
    with contextlib.suppress(CkptError):
        c.fetch(-1)


CASES: dict[str, tuple[Prep, Call]] = {
    "setup": (
        lambda c, f: None,
        lambda c, s: c.setup(Policy.FREE_UPFRONT, hash_bits=12, max_objs=99),
    ),
    "lookup_add first": (lambda c, f: _pipe(f), lambda c, s: _anon(c.lookup_add(s[0]))),
    "lookup_add other end": (
        _checkpoint_pipe,
        lambda c, s: _anon(c.lookup_add(s[1])),
    ),
    "lookup_add again": (_checkpoint_pipe, lambda c, s: _anon(c.lookup_add(s[0]))),
    "insert": (lambda c, f: _pipe(f), lambda c, s: c.insert(3, s[0])),
    "fetch": (_restart_pipe, lambda c, s: _same_file(c.fetch(1), s[0])),
    "fetch test": (_test_obj, lambda c, s: c.fetch(1, ObjType.TEST) == s),
    "contained": (_checkpoint_pipe, lambda c, s: c.contained()),
    "release": (_restart_pipe, lambda c, s: c.release()),
    "defer_log": (lambda c, f: None, lambda c, s: c.defer_log(5)),
    "defer_drop": (_restart_pipe, lambda c, s: c.defer_drop(2)),
    "defer_fail": (lambda c, f: None, lambda c, s: c.defer_fail(5)),
    "defer_run": (_logged, lambda c, s: (c.defer_run(), c.tags())),
    "tags": (lambda c, f: (_logged(c, f), c.defer_run()), lambda c, s: c.tags()),
    # the log also tells of its own failed reads (EFAULT): left out
    "errors": (
        _an_error,
        lambda c, s: [(e.seq, e.err) for e in c.errors() if e.err != -14],
    ),
    "stats": (_test_obj, lambda c, s: c.stats().nr_objs),
    "test_new": (lambda c, f: None, lambda c, s: c.test_new()),
    "test_put": (lambda c, f: c.test_new(), lambda c, s: c.test_put(s)),
    "test_stat": (_test_obj, lambda c, s: c.test_stat(s)),
}


# Batches: items before a failing one stay done (ckpt.h) and the error says
# how many; the rest, sent again, must complete the fault-free result.
# name -> (prep, items(state), run(ctx, items) -> results, norm(state, results))
BATCHES: dict[str, tuple[Prep, Callable, Callable, Callable]] = {
    "lookup_add_many": (
        lambda c, f: _pipe(f),
        lambda s: [s[0], s[1], s[0]],
        lambda c, items: c.lookup_add_many(items),
        lambda s, res: _anon(res),
    ),
    "insert_many": (
        lambda c, f: _pipe(f),
        lambda s: [(3, s[0]), (4, s[1])],
        lambda c, items: c.insert_many(items) or [None] * len(items),
        lambda s, res: res,
    ),
    "fetch_many": (
        _restart_pipe,
        lambda s: [1, 2],
        lambda c, items: c.fetch_many(items),
        lambda s, res: [_same_file(fd, s[0]) for fd in res],
    ),
}


def _batch_case(name: str) -> tuple[Prep, Call, Callable]:
    prep, items, run, norm = BATCHES[name]

    def call(c: Context, s: Any) -> Any:
        return norm(s, run(c, items(s)))

    def finish(c: Context, s: Any, e: CkptError) -> Any:
        """The failed batch's done results plus the rest sent again."""
        done = e.done or 0
        res = list(e.results) if name != "insert_many" else [None] * done
        return norm(s, res + run(c, items(s)[done:]))

    return prep, call, finish


for _name in BATCHES:
    CASES[_name] = _batch_case(_name)[:2]


@pytest.fixture
def knob() -> Iterator[None]:
    if not os.path.exists(f"{PARAMS}/fail_nth"):
        pytest.fail("ckpt.ko has no fail_nth parameter")
    yield
    write_param("fail_nth", 0)


@pytest.mark.parametrize("name", list(CASES))
def test_every_failure_is_clean(name: str, knob: None, observer: Context) -> None:
    prep, call = CASES[name]
    base = mod_counts(observer)
    fds = Fds()
    with Context() as c:
        expected = call(c, prep(c, fds))
    fds.close_all()
    forced = 0
    for n in count(1):
        assert n < 200, "the walk does not end"
        fds = Fds()
        with Context() as c:
            state = prep(c, fds)
            before = _snapshot(c)
            seen = c.errors()[-1].seq if c.errors() else 0
            fired = fail_fired()
            write_param("fail_nth", n)
            try:
                got, err = call(c, state), None
            except CkptError as e:
                got, err = None, e
            write_param("fail_nth", 0)
            if fail_fired() == fired:
                assert err is None, f"{name}: failed with no fault forced: {err}"
                assert got == expected
                break
            forced += 1
            if err is None:  # a failure that only costs speed
                assert got == expected, f"{name}, failure {n}: wrong result"
            else:
                assert err.errno in (12, 14, 24), f"{name}, failure {n}: {err}"
                new = c.errors(since=seen)
                assert new and new[-1].err == -err.errno, f"{name}: {new}"
                # 6.1: a batch FETCH item whose handle became unwritable
                # after the install keeps its fd (never closed by number),
                # which the log names: ours to close
                for e in new:
                    if m := re.search(r"fd (\d+) stays installed", e.msg):
                        assert os.uname().release.startswith("6.1."), e
                        os.close(int(m.group(1)))
                if name in BATCHES and err.done:
                    retry = _batch_case(name)[2](c, state, err)
                else:
                    assert _snapshot(c) == before, f"{name}, failure {n}: {err}"
                    retry = call(c, state)
                assert retry == expected, f"{name}, retry after {n}"
        fds.close_all()
        assert mod_counts(observer) == base, f"{name}, failure {n}: leak"
    FORCED[name] = forced


def test_forced_failures_total() -> None:
    total = sum(FORCED.values())
    print(f"fail_nth: {total} failures forced over {len(FORCED)} ioctls: {FORCED}")
    out = os.environ.get("CKPT_RESULTS")
    if out and os.path.isdir(out):
        with open(os.path.join(out, "vm-faults.txt"), "w") as f:
            f.write(f"{total}\n{FORCED}\n")
    # every ioctl that takes an argument (copied in, at least) was made to
    # fail; release and defer_run take none and allocate nothing
    assert set(FORCED) == set(CASES)
    assert [k for k, v in FORCED.items() if not v] == ["release", "defer_run"]
