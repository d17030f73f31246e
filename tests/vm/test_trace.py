"""pyckpt trace (bcc): the order each policy promises, seen by kprobes.

One BPF program per VM run (compiling costs about a minute under TCG): the
session fixture builds it and every test resets its tables.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pyckpt import Context, Policy
from pyckpt.kinds.pipe import pipes
from pyckpt.tools import trace
from pyckpt.tools.repro import halfpipe

N = 20  # pipe write ends in the hash: N FILE refs (+ their INODE refs) and entries
DROPS = ["file_drop", "inode_drop", "test_drop"]


@pytest.fixture(scope="session")
def tracer() -> Iterator[trace.Tracer]:
    why = trace.why_unavailable()
    if why:
        if os.environ.get("CKPT_IN_VM") == "1":
            pytest.fail(f"bcc must run in the project's VM, but: {why}")
        pytest.skip(why)
    t = trace.Tracer()
    yield t
    t.close()


def order(tr: trace.Trace) -> tuple[int, trace.Agg, trace.Agg]:
    """(release time, ref drops, entry kfrees) of this process's one release."""
    (rel,) = [
        e["ts"]
        for e in tr.events
        if e["func"] == "ioc_release"
        and e["kind"] == trace.LEAVE
        and e["tgid"] == os.getpid()
    ]
    drops = tr.span(DROPS)
    kfree = tr.agg(trace.KFREE)
    assert drops is not None and kfree is not None, tr.aggs
    return rel, drops, kfree


def check_order(policy: Policy, rel: int, drops: trace.Agg, kfree: trace.Agg) -> None:
    if policy == Policy.CLEAR_EARLY:  # the v2 patch
        assert drops.last < rel < kfree.first
    elif policy == Policy.FREE_UPFRONT:
        assert drops.last < rel and kfree.last < rel
    else:  # before the patch
        assert rel < drops.first and rel < kfree.first


@pytest.mark.parametrize("policy", list(Policy))
def test_release_orders_drops_and_kfrees(tracer: trace.Tracer, policy: Policy) -> None:
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(N)]
    tracer.reset()
    ctx = Context(policy=policy)
    try:
        ctx.insert_many([(i + 1, w) for i, (_, w) in enumerate(pipes)])
        for _, w in pipes:
            os.close(w)
        ctx.release()
    finally:
        ctx.close()
        for r, _ in pipes:
            os.close(r)
    tr = tracer.collect()
    rel, drops, kfree = order(tr)
    assert drops.count >= N and kfree.count == N  # one entry kfree per object
    assert tr.agg("ckpt_obj_insert").count == N
    check_order(policy, rel, drops, kfree)


@pytest.mark.parametrize("policy", list(Policy))
def test_restart_orders_drops_and_kfrees(
    tracer: trace.Tracer, policy: Policy, tmp_path
) -> None:
    log = str(tmp_path / "log")
    res = halfpipe.checkpoint_tree(log)
    tracer.reset()  # only the restart from here
    out = halfpipe.restart_once(res.image, log, policy)
    tr = tracer.collect()
    rel, drops, kfree = order(tr)
    nobjs = len(res.image.files) + len(pipes(res.image))
    assert kfree.count == nobjs, (kfree, nobjs)
    check_order(policy, rel, drops, kfree)
    # and the restored tasks saw what the order implies
    assert (out.ev("reader")[1] < out.t_close) == (policy != Policy.CLEAR_AT_END)


def test_timeline_and_histograms(tracer: trace.Tracer) -> None:
    tracer.reset()
    with Context() as ctx:
        for i in range(5):
            ctx.defer_log(i)
        ctx.defer_run()
        r, w = os.pipe2(os.O_CLOEXEC)
        ctx.insert(1, w)
        os.close(w)
        fd = ctx.fetch(1)
        os.close(fd)
        ctx.release()
    os.close(r)
    tr = tracer.collect()
    text = trace.timeline(tr)
    lines = [ln for ln in text.splitlines() if f"pid {os.getpid():>6}" in ln]
    funcs = [re.search(r"(?:->|<-) (\S+)", ln)[1] for ln in lines]
    # calls appear in the order made; the teardown's kfree comes last
    want = [
        "ckpt_deferqueue_run",
        "ckpt_obj_insert",
        "ckpt_obj_fetch",
        "ioc_release",
        "ckpt_obj_hash_clear",
        "ckpt_release",
        "ckpt_obj_hash_free",
        "entry",
    ]
    seen = [f for f in dict.fromkeys(funcs) if f in want]
    assert seen == want, text
    hist = trace.histograms(tr)
    assert "ckpt_obj_insert: 1 calls" in hist and "ioc_release: 1 calls" in hist, hist
    assert tr.lost == 0 and tr.missing == [], (tr.lost, tr.missing)
    # what the kernel returned, without a kernel address: fetch's pointer is 0
    rets = {
        e["func"]: e["ret"]
        for e in tr.events
        if e["kind"] == trace.LEAVE and e["tgid"] == os.getpid()
    }
    assert (rets["ckpt_obj_insert"], rets["ckpt_obj_fetch"]) == (0, 0), rets
    assert rets["ckpt_deferqueue_run"] == 5 and rets["ckpt_obj_hash_free"] == 0


def test_cli_needs_a_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyckpt", "trace"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "give a command" in out.stderr
