"""pyckpt repro: each scenario's table, asserted cell by cell (seeds 000-004)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyckpt import Policy
from pyckpt.tools import repro
from pyckpt.tools.repro import halfpipe


@pytest.fixture(scope="module")
def halfpipe_report() -> repro.Report:
    return repro.run("halfpipe", repro.POLICY_ORDER)


def test_halfpipe_every_claim_holds(halfpipe_report: repro.Report) -> None:
    failed = [c for c, ok in halfpipe_report.checks if not ok]
    assert not failed, halfpipe_report.render()
    assert [r[0] for r in halfpipe_report.rows] == [
        "clear-at-end",
        "free-upfront",
        "clear-early",
    ]


def test_halfpipe_before_the_patch_the_pipe_reopens(
    halfpipe_report: repro.Report,
) -> None:
    d = halfpipe_report.data["clear-at-end"]
    assert d["reader"]["event"] == "eof" and not d["reader"]["before_close"]
    # blocked at least as long as the coordinator held the context
    assert d["reader"]["ms"] >= 0.5 * halfpipe.HOLD * 1e3, d
    # a whole pipe buffer went into a pipe whose reader was gone
    assert d["writer"]["event"] == "epipe" and d["writer"]["bytes"] >= 4096, d
    row = halfpipe_report.row("clear-at-end")
    assert "EOF only at close" in row["restored reader"]
    assert "re-opened pipe" in row["restored writer"]
    assert (row["hash refs dropped"], row["entries kfree'd"]) == (
        "at close",
        "at close",
    )


@pytest.mark.parametrize(
    ("policy", "freed"), [("clear-early", "close"), ("free-upfront", "release")]
)
def test_halfpipe_after_the_patch_eof_and_epipe_at_once(
    halfpipe_report: repro.Report, policy: str, freed: str
) -> None:
    d = halfpipe_report.data[policy]
    assert d["reader"] == {**d["reader"], "event": "eof", "before_close": True}
    assert d["reader"]["bytes"] == len(halfpipe.IN_FLIGHT)
    assert (d["writer"]["event"], d["writer"]["bytes"]) == ("epipe", 0)
    assert (d["dropped_at"], d["freed_at"]) == ("release", freed)
    assert "EOF at once" in halfpipe_report.row(policy)["restored reader"]


def test_deferqueue_table() -> None:
    rep = repro.run("deferqueue")
    assert rep.ok, rep.render()
    d = rep.data["clear-early"]
    assert d["fifo_tags"] == [5, 1, 4, 2**64 - 1, 0, 3]
    assert (d["error"], d["tags_after_error"], d["pending_after_error"]) == (
        "EIO",
        [1],
        2,
    )
    assert d["drop_reader"] == ["blocks", "EOF"]
    assert d["unrun_reader"] == ["blocks", "EOF"] and d["unrun_defers_left"] == 0
    assert rep.row("run() returns an error")["seen"].startswith("EIO")


def test_epoll_table() -> None:
    rep = repro.run("epoll")
    assert rep.ok, rep.render()
    d = rep.data["clear-early"]
    assert d["restored"] == d["live"] and len(d["live"]) == 2
    leak = rep.data["leak"]
    assert f"(original fd {leak['original_fd']})" in leak["message"]
    assert leak["path"].startswith("pipe:[") and leak["path"] in leak["message"]


def test_header_table_and_json_from_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyckpt", "repro", "header", "--json"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    assert rep["ok"] and all(c["ok"] for c in rep["checks"])
    assert rep["data"]["head"]["release"] == os.uname().release
    types = [r["type"] for r in rep["data"]["records"]]
    assert types[0] == "HEAD" and types[-1] == "TAIL"
    # every FD record belongs to a task through its ptag
    fds = [r for r in rep["data"]["records"] if r["type"] == "FD"]
    assert len(fds) == 4 and all(r["task"] for r in fds)


def test_unknown_scenario_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        repro.run("nope")


def test_one_policy_only() -> None:
    rep = repro.run("halfpipe", [Policy.CLEAR_EARLY])
    assert [r[0] for r in rep.rows] == ["clear-early"] and rep.ok, rep.render()
