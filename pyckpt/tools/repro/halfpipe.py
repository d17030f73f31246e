"""The half-closed pipe race, on a real checkpoint and restart.

A tree holds a pipe in each direction with one end closed everywhere: a
reader whose writer is gone (bytes still buffered) and a writer whose reader
is gone.  Checkpoint records the closed end as closed; restart must create
both ends, and the objhash holds the end no task has.  Whether a restarted
task sees EOF/EPIPE at once or a pipe that "briefly re-opened" depends only
on when the hash lets go of it: the policy.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyckpt
from pyckpt.abi import Policy
from pyckpt.checkpointer import checkpoint
from pyckpt.device import Context
from pyckpt.kinds.pipe import pipes
from pyckpt.tools.repro import POLICY_ORDER, Report, _tree, policy_name

DEFAULT_POLICIES = POLICY_ORDER
IN_FLIGHT = b"in flight at checkpoint time\n" * 3
HOLD = 1.0  # s the coordinator keeps the context after both tasks started
LIMIT = 30.0  # s a restarted task waits for EOF/EPIPE before giving up

# What every restarted task runs: the reader (fd 0) reads until EOF, the
# writer (fd 3) writes until EPIPE; each logs CLOCK_MONOTONIC times to fd 1.
TASK = r"""
import fcntl, os, select, sys, time
def say(*w):
    os.write(1, (" ".join(map(str, w)) + "\n").encode())
def has(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
limit, t0, n = float(sys.argv[1]), time.monotonic(), 0
if has(0):
    say("reader start", t0)
    p = select.poll()
    p.register(0, select.POLLIN)
    while time.monotonic() - t0 < limit:
        if p.poll(50):
            chunk = os.read(0, 65536)
            if not chunk:
                say("reader eof", time.monotonic(), n)
                break
            n += len(chunk)
    else:
        say("reader timeout", time.monotonic(), n)
elif has(3):
    fcntl.fcntl(3, fcntl.F_SETFL, os.O_NONBLOCK)
    say("writer start", t0)
    p = select.poll()
    p.register(3, select.POLLOUT)
    while time.monotonic() - t0 < limit:
        try:
            n += os.write(3, b"x" * 4096)
        except BlockingIOError:
            p.poll(50)  # full: POLLERR once the last reader is gone
        except BrokenPipeError:
            say("writer epipe", time.monotonic(), n)
            break
    else:
        say("writer timeout", time.monotonic(), n)
"""


@dataclass
class Outcome:
    """One policy's run; times are CLOCK_MONOTONIC seconds."""

    policy: Policy
    release_s: float  # the release ioctl and letting the tasks go
    t_release: float
    t_close: float
    dropped_at: str  # "release" or "close": when the hash's refs went
    freed_at: str  # when its entries were kfree'd
    lines: dict[str, tuple[str, float, int]]  # "reader start" -> (word, t, n)

    def ev(self, role: str) -> tuple[str, float, int]:
        return self.lines.get(f"{role} end", ("missing", 0.0, 0))

    def start(self, role: str) -> float:
        return self.lines.get(f"{role} start", ("", 0.0, 0))[1]


def _shared(log: str) -> _tree.Shared:
    r1, w1 = os.pipe()
    os.write(w1, IN_FLIGHT)
    r2, w2 = os.pipe()
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return {"r1": r1, "w1": w1, "r2": r2, "w2": w2, "log": logfd}


def build_tree(log: str) -> int:
    """root -> reader (fd 0: a pipe with no writer left) and writer (fd 3:
    a pipe with no reader left); both log to fd 1.  Returns the root pid."""
    return _tree.build(
        lambda: _shared(log),
        [lambda s: {0: s["r1"], 1: s["log"]}, lambda s: {3: s["w2"], 1: s["log"]}],
        root=lambda s: {},
    )


def checkpoint_tree(log: str) -> pyckpt.CheckpointResult:
    root = build_tree(log)
    try:
        return checkpoint(root, kill=True)  # killed while frozen, no file
    finally:
        _tree.kill(root)


def _parse(text: str) -> dict[str, tuple[str, float, int]]:
    out = {}
    for line in text.splitlines():
        role, word, *rest = line.split()
        key = f"{role} {'start' if word == 'start' else 'end'}"
        out[key] = (word, float(rest[0]), int(rest[1]) if len(rest) > 1 else 0)
    return out


def restart_once(image: pyckpt.Image, log: str, policy: Policy) -> Outcome:
    """Restart image under policy, keep the context HOLD s after both tasks
    started (or until both are done), then close it."""
    offset = os.path.getsize(log)

    def lines() -> dict[str, tuple[str, float, int]]:
        with open(log) as f:
            f.seek(offset)
            return _parse(f.read())

    argv = [sys.executable, "-c", TASK, str(LIMIT)]
    with Context() as observer:
        base = observer.stats().mod_objs
        r = pyckpt.restart(image, policy=policy, argv=argv, release=False)
        try:
            t0 = time.monotonic()
            r.release()
            t1 = time.monotonic()
            st = r.context.stats()
            dropped_at = "release" if st.nr_objs == 0 else "close"
            freed_at = "release" if observer.stats().mod_objs == base else "close"
            both = ("reader start", "writer start")
            _tree.wait_for(lambda: all(k in lines() for k in both), LIMIT)
            done = ("reader end", "writer end")
            _tree.wait_for(lambda: all(k in lines() for k in done), HOLD)
            t_close = time.monotonic()
            r.teardown()
            _tree.wait_for(lambda: all(k in lines() for k in done), LIMIT)
            r.wait(timeout=LIMIT)
        except BaseException:
            r.kill()
            raise
    return Outcome(policy, t1 - t0, t0, t_close, dropped_at, freed_at, lines())


def _reader_cell(o: Outcome) -> str:
    word, t, n = o.ev("reader")
    if word != "eof":
        return f"{word}, {n} B"
    ms = (t - o.start("reader")) * 1e3
    if t >= o.t_close:
        return f"{n} B, then blocked {ms:.0f} ms: EOF only at close"
    return f"{n} B, then EOF at once ({ms:.0f} ms)"


def _writer_cell(o: Outcome) -> str:
    word, t, n = o.ev("writer")
    if word != "epipe":
        return f"{word}, {n} B written"
    ms = (t - o.start("writer")) * 1e3
    if n == 0 and t < o.t_close:
        return f"EPIPE at once ({ms:.0f} ms), 0 B written"
    return f"{n} B written into the re-opened pipe, EPIPE after {ms:.0f} ms"


EXPECT = {  # policy -> (EOF/EPIPE before close, refs dropped at, kfree'd at)
    Policy.CLEAR_AT_END: (False, "close", "close"),
    Policy.FREE_UPFRONT: (True, "release", "release"),
    Policy.CLEAR_EARLY: (True, "release", "close"),
}


def run(policies: Sequence[Policy] = DEFAULT_POLICIES) -> Report:
    rep = Report(
        "halfpipe",
        "000",
        "a half-closed pipe in each direction, restarted under each policy",
        [
            "policy",
            "restored reader",
            "restored writer",
            "hash refs dropped",
            "entries kfree'd",
            "release",
        ],
    )
    log = f"/tmp/pyckpt-halfpipe-{os.getpid()}.log"
    try:
        res = checkpoint_tree(log)
        outcomes = [restart_once(res.image, log, p) for p in policies]
    finally:
        if os.path.exists(log):
            os.unlink(log)
    saved = pipes(res.image).values()
    rep.check(
        sorted((p.no_reader, p.no_writer) for p in saved)
        == [(False, True), (True, False)],
        "checkpoint recorded one pipe with no writer and one with no reader",
    )
    for o in outcomes:
        name = policy_name(o.policy)
        rw, rt, rn = o.ev("reader")
        ww, wt, wn = o.ev("writer")
        rep.rows.append(
            [
                name,
                _reader_cell(o),
                _writer_cell(o),
                f"at {o.dropped_at}",
                f"at {o.freed_at}",
                f"{o.release_s * 1e3:.1f} ms",
            ]
        )
        rep.data[name] = {
            "reader": {
                "event": rw,
                "bytes": rn,
                "ms": (rt - o.start("reader")) * 1e3,
                "before_close": rt < o.t_close,
            },
            "writer": {
                "event": ww,
                "bytes": wn,
                "ms": (wt - o.start("writer")) * 1e3,
                "before_close": wt < o.t_close,
            },
            "dropped_at": o.dropped_at,
            "freed_at": o.freed_at,
            "release_ms": o.release_s * 1e3,
            "held_ms": (o.t_close - o.t_release) * 1e3,
        }
        early, drop, free = EXPECT[o.policy]
        rep.check(
            rn == len(IN_FLIGHT) and rw == "eof",
            f"{name}: the reader got the {len(IN_FLIGHT)} bytes in flight, then EOF",
        )
        if early:
            rep.check(
                rt < o.t_close, f"{name}: the reader saw EOF before the context closed"
            )
            rep.check(
                ww == "epipe" and wn == 0,
                f"{name}: the writer got EPIPE on its first write",
            )
        else:
            rep.check(
                rt >= o.t_close, f"{name}: the reader blocked until the context closed"
            )
            rep.check(
                ww == "epipe" and wn > 0 and wt >= o.t_close,
                f"{name}: the writer wrote into a pipe that briefly re-opened",
            )
        rep.check(
            (o.dropped_at, o.freed_at) == (drop, free),
            f"{name}: refs dropped at {drop}, entries kfree'd at {free}",
        )
    rep.notes.append(
        f"The coordinator holds the context {HOLD:.0f} s after both tasks started, "
        "then closes it; times are from each task's start."
    )
    return rep
