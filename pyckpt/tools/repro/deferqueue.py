"""The deferqueue, with what the RFC v2 posted beside what ckpt.ko does.

Each row is one claim of the post (or one of its two bugs): what the RFC's
code did, what the module does, and what this run saw through /dev/ckpt.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from pyckpt.abi import ObjType, Policy
from pyckpt.device import Context
from pyckpt.errors import CkptError
from pyckpt.tools.repro import Report, policy_name

DEFAULT_POLICIES = (Policy.CLEAR_EARLY,)
TAGS = [5, 1, 4, 2**64 - 1, 0, 3]  # a full 8-byte payload among them


def _reader(r: int) -> str:
    try:
        return "EOF" if os.read(r, 1) == b"" else "data"
    except BlockingIOError:
        return "blocks"


def _fifo(ctx: Context) -> tuple[list[int], int]:
    for t in TAGS:
        ctx.defer_log(t)
    n = ctx.defer_run()
    return ctx.tags(), n


def _first_error(ctx: Context) -> tuple[str, list[int], int, int]:
    ctx.defer_log(1)
    ctx.defer_fail(errno.EIO)
    ctx.defer_log(2)
    ctx.defer_log(3)
    try:
        ctx.defer_run()
        got = "no error"
    except CkptError as e:
        got = e.errname
    pending = ctx.stats().defer_pending
    return got, ctx.tags(), pending, ctx.defer_run()


def _create_attach_delete(policy: Policy) -> list[str]:
    """A pipe's write end is created and attached (inserted: the hash holds
    it), its last user goes away, its deletion is deferred: the reader sees
    EOF once the queue runs, before any release."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with Context(policy=policy) as ctx:
            ctx.insert(1, w, ObjType.FILE)
            os.close(w)
            w = -1
            ctx.defer_drop(1)
            seen = [_reader(r)]
            ctx.defer_run()
            seen.append(_reader(r))
            seen.append(str(ctx.stats().nr_objs))  # the entry stays: objref not reused
        return seen
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _destroy_unrun(policy: Policy) -> tuple[str, str, int]:
    """A queue torn down unrun: each entry's destructor releases what it
    held (the DROP entry's own reference on the file)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with Context() as observer:
            base = observer.stats().mod_defers
            ctx = Context(policy=policy)
            ctx.insert(1, w, ObjType.FILE)
            os.close(w)
            w = -1
            ctx.defer_drop(1)
            before = _reader(r)
            ctx.close()  # never ran
            return before, _reader(r), observer.stats().mod_defers - base
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def run(policies: Sequence[Policy] = DEFAULT_POLICIES) -> Report:
    rep = Report(
        "deferqueue",
        "002",
        "work postponed to the end of checkpoint/restart",
        ["claim", "RFC v2 as posted", "ckpt.ko", "seen"],
    )
    for policy in policies:
        name = policy_name(policy)
        with Context(policy=policy) as ctx:
            tags, n = _fifo(ctx)
        with Context(policy=policy) as ctx:
            err, etags, pending, rest = _first_error(ctx)
        cad = _create_attach_delete(policy)
        unrun = _destroy_unrun(policy)
        rep.data[name] = {
            "fifo_tags": tags,
            "run_count": n,
            "error": err,
            "tags_after_error": etags,
            "pending_after_error": pending,
            "second_run": rest,
            "drop_reader": cad[:2],
            "drop_entries_left": int(cad[2]),
            "unrun_reader": list(unrun[:2]),
            "unrun_defers_left": unrun[2],
        }
        sfx = f" ({name})" if len(policies) > 1 else ""
        rep.rows += [
            [
                f"FIFO order{sfx}",
                (
                    "list_add_tail(&ctx->deferqueue, &wq->list): "
                    "arguments swapped, the head is linked into an unset entry"
                ),
                "list_add_tail(&dq->list, &head->list)",
                " ".join(map(str, tags)),
            ],
            [
                f"entry size{sfx}",
                "kmalloc(sizeof(wq) + size): a pointer's size, the copy overruns",
                "sizeof(*dq) + size",
                f"8-byte tag {TAGS[3]:#x} came back intact"
                if TAGS[3] in tags
                else "corrupt",
            ],
            [f"run() returns the count{sfx}", "yes", "yes", f"{n} of {len(TAGS)}"],
            [
                f"run() returns an error{sfx}",
                "promised; its code logged and went on",
                "the first error; later entries stay queued",
                f"{err}, ran {etags}, {pending} pending, next run {rest}",
            ],
            [
                f"create, attach, delete later{sfx}",
                "the example of the post",
                "DROP drops the hash's reference when run",
                f"reader {cad[0]} before run, {cad[1]} after; entries {cad[2]}",
            ],
            [
                f"queue torn down unrun{sfx}",
                "cr_ctx_free runs it",
                "each entry's destructor",
                f"reader {unrun[0]} -> {unrun[1]}, {unrun[2]} entries left",
            ],
        ]
        rep.check(tags == TAGS, f"{name}: entries run in the order queued")
        rep.check(n == len(TAGS), f"{name}: run() returns the number run")
        rep.check(
            err == "EIO" and etags == [1] and pending == 2 and rest == 2,
            f"{name}: run() returns the first error and stops there",
        )
        rep.check(
            cad[:2] == ["blocks", "EOF"],
            f"{name}: a deferred drop lets the last writer go when the queue runs",
        )
        rep.check(
            unrun == ("blocks", "EOF", 0),
            f"{name}: an unrun queue's destructors release what it held",
        )
    return rep
