"""The criu half of `python -m pyckpt.tools.bench criu` reads criu's own output:
its stats and, when it fails, the error that made it fail.  Checked on
output captured from Debian's criu 3.17.1 in the guest (tests/host/data/criu)."""

from __future__ import annotations

from pathlib import Path

from pyckpt.tools.bench import criu_error, parse_criu

DATA = Path(__file__).resolve().parent / "data" / "criu"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_dump_stats_give_the_frozen_time() -> None:
    stats = parse_criu(read("dump-stats.txt") + read("dump-ok.log"))
    assert stats == {"freezing": 0.014122, "frozen": 0.280172}


def test_restore_stats_give_the_restore_time() -> None:
    assert parse_criu(read("restore-stats.txt")) == {"restore": 0.162635}


def test_no_stats_no_times() -> None:
    # a failed dump prints no stats: no time is made up
    assert parse_criu(read("dump-oom.log")) == {}


def test_the_cause_of_a_failed_dump() -> None:
    want = "Error (criu/pipes.c:416): OOM storing pipe"
    assert criu_error(read("dump-oom.log")) == want
    # the harmless Error lines every dump logs first do not hide it
    assert criu_error(read("dump-ok.log") + read("dump-oom.log")) == want


def test_an_error_without_a_summary_is_still_reported() -> None:
    assert criu_error("noise\nError (x.c:1): boom\n") == "Error (x.c:1): boom"
    assert criu_error("") == "no output"
    assert criu_error("last words\n") == "last words"
    # -v4 and up: a timestamp first
    assert criu_error("(00.012345) Error (y.c:2): late\n") == "Error (y.c:2): late"
