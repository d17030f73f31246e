#!/usr/bin/env python3
"""Find the kernel's reports in a guest's kernel log and name the test that ran.

    klog.py LOG [--kmemleak FILE] [--tsv]

LOG is the guest's dmesg (or its console, for a guest that died). The guest
writes markers to /dev/kmsg (vm/kmsg_marks.py, vm/guest.sh,
vm/guest-tests.sh)::

    ckpt-test: phase insmod        ckpt.ko is loaded after this line
    ckpt-test: start NODEID        pytest starts a test
    ckpt-test: phase NAME          after-tests, rmmod, kmemleak-read, ...

and a report (KASAN, KFENCE, UBSAN, lockdep, WARNING, BUG, Oops, list
corruption, ...) belongs to the last marker before it. Reports before the
``insmod`` marker come from booting the kernel, not from us: they are listed
but do not fail the run (without any marker, everything counts).

kmemleak's report (``/sys/kernel/debug/kmemleak``, read right after the
``kmemleak-read`` marker) gives each object's age, so its allocation time,
hence the test, is ``t(kmemleak-read) - age`` on the log's clock.

Prints one line per report; with --tsv, ``KIND<TAB>WHERE<TAB>FIRST
LINE<TAB>1 if ckpt.ko is in its trace`` per report that fails the run, for
vm/run-tests.sh. Every report fails it, wherever its trace is: one in another
subsystem during a test may still be the module's doing. Exits 1 if any report fails
the run. Standard library only (the host runs it outside the venv too).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MARK = "ckpt-test: "
BOOT = "boot (before ckpt.ko was loaded)"
# "[   12.345678] msg" (dmesg, console) or a bare "msg"; a "<4>" level too
LINE_RE = re.compile(r"^(?:<\d+>)?(?:\[\s*(\d+\.\d+)\]\s?)?(.*)$")

# (kind, pattern) in order: the first that matches names the report. Each
# match starts a report; its call trace and the like follow it.
HEADERS: list[tuple[str, re.Pattern[str]]] = [
    (k, re.compile(p))
    for k, p in [
        ("KASAN", r"BUG: KASAN: |KASAN: "),
        ("KFENCE", r"BUG: KFENCE: "),
        ("UBSAN", r"UBSAN: "),
        (
            "lockdep",
            (
                r"WARNING: (possible circular locking|possible recursive locking"
                r"|inconsistent lock state|possible irq lock inversion"
                r"|suspicious RCU usage|bad unlock balance|held lock freed"
                r"|lock held when returning|.*lock.*)"
                r"|INFO: possible (circular|recursive|irq)|DEBUG_LOCKS_WARN_ON"
            ),
        ),
        (
            "atomic-sleep",
            (
                r"BUG: sleeping function called from invalid context"
                r"|BUG: scheduling while atomic"
            ),
        ),
        ("list-corruption", r"list_(add|del) corruption"),
        ("kmemleak-off", r"kmemleak: .*(disabled|Cannot allocate)"),
        ("refcount", r"refcount_t: "),
        ("ckpt-leak", r"ckpt: leaked"),
        ("WARNING", r"WARNING: "),
        ("BUG", r"\bBUG\b"),
        (
            "oops",
            (
                r"Oops|general protection fault|Kernel panic|Unable to handle"
                r"|unable to handle|stack-protector|double fault"
            ),
        ),
        (
            "stall",
            r"soft lockup|hard LOCKUP|blocked for more than|rcu_.* detected stall",
        ),
    ]
]
# a trace with no report header above it (since the last marker) is a report
TRACE_RE = re.compile(r"Call Trace:")
# kmemleak's own notice after a scan: its report file is what counts
KMEMLEAK_NOTE_RE = re.compile(r"kmemleak: \d+ new suspected memory leaks")
OBJECT_RE = re.compile(r"^unreferenced object (0x[0-9a-f]+) \(size (\d+)\):")
AGE_RE = re.compile(r"jiffies \d+ \(age (\d+\.\d+)s\)")


@dataclass
class Report:
    kind: str
    where: str  # the test's node id, or a phase
    first: str  # the report's first line
    time: float | None = None
    lines: list[str] = field(default_factory=list)
    ours: bool = True  # False: before ckpt.ko was loaded

    @property
    def in_module(self) -> bool:
        """ckpt.ko's code is in the report's trace (named while it is loaded;
        kmemleak after rmmod shows bare addresses)."""
        return any("[ckpt]" in ln for ln in self.lines)

    def summary(self) -> str:
        where = f"{self.where} (ckpt.ko in the trace)" if self.in_module else self.where
        return f"{self.kind} in {where}: {self.first}"


@dataclass
class Mark:
    time: float | None
    where: str


def parse_log(text: str) -> tuple[list[Report], list[Mark]]:
    """The reports in a kernel log and the markers, in order."""
    reports: list[Report] = []
    marks: list[Mark] = []
    where = BOOT
    loaded = False
    last_header = -10
    current: Report | None = None
    lines = text.splitlines()
    has_marks = any(MARK in ln for ln in lines)
    for i, raw in enumerate(lines):
        m = LINE_RE.match(raw)
        ts = float(m.group(1)) if m and m.group(1) else None
        msg = m.group(2) if m else raw
        k = msg.find(MARK)
        if k >= 0:
            what, _, arg = msg[k + len(MARK) :].strip().partition(" ")
            if what == "start":
                where = arg
            elif what == "phase":
                where = arg
                loaded = loaded or arg == "insmod"
            else:
                continue
            marks.append(Mark(ts, where))
            current = None
            continue
        if KMEMLEAK_NOTE_RE.search(msg):
            continue
        kind = next((kd for kd, rx in HEADERS if rx.search(msg)), None)
        if kind is None and current is None and TRACE_RE.search(msg):
            kind = "call-trace"
        if kind is not None and not (
            # one report, one entry: "WARNING: ..." then "BUG: ..." inside
            # the same block (e.g. KASAN's banner) is the same report
            current is not None and i - last_header <= 2
        ):
            current = Report(kind, where, msg.strip(), ts)
            current.ours = loaded or not has_marks
            reports.append(current)
        if kind is not None:
            last_header = i
        if current is not None and len(current.lines) < 40:
            current.lines.append(msg)
    return reports, marks


def parse_kmemleak(text: str, marks: list[Mark]) -> list[Report]:
    """kmemleak's objects, each given to the test that allocated it."""
    read_at = next(
        (m.time for m in reversed(marks) if m.where == "kmemleak-read"), None
    )
    loaded_at = next((m.time for m in marks if m.where == "insmod"), None)
    reports: list[Report] = []
    current: Report | None = None
    for line in text.splitlines():
        m = OBJECT_RE.match(line)
        if m:
            current = Report("kmemleak", "unknown test", line.strip())
            reports.append(current)
        if current is None:
            continue
        current.lines.append(line)
        a = AGE_RE.search(line)
        if a and read_at is not None:
            born = read_at - float(a.group(1))
            current.time = born
            current.where = where_at(marks, born)
            current.ours = loaded_at is None or born >= loaded_at
            if not current.ours:
                current.where = BOOT
    return reports


def where_at(marks: list[Mark], t: float) -> str:
    """The test or phase that was running at time t."""
    where = BOOT
    for m in marks:
        if m.time is None or m.time > t:
            break
        where = m.where
    return where


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="the guest's dmesg or console")
    ap.add_argument("--kmemleak", type=Path, help="/sys/kernel/debug/kmemleak")
    ap.add_argument("--tsv", action="store_true", help="failing reports as TSV")
    args = ap.parse_args(argv)

    reports, marks = parse_log(args.log.read_text(errors="replace"))
    if args.kmemleak and args.kmemleak.exists():
        reports += parse_kmemleak(args.kmemleak.read_text(errors="replace"), marks)
    bad = [r for r in reports if r.ours]
    for r in reports:
        if args.tsv:
            if r.ours:
                print(f"{r.kind}\t{r.where}\t{r.first}\t{int(r.in_module)}")
            continue
        print(("" if r.ours else "(not ours) ") + r.summary())
        if r.ours:
            for ln in r.lines[1:8]:
                print(f"    {ln}")
    for r in reports:
        if not r.ours:
            print(f"klog: ignored, {r.summary()}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
