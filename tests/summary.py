#!/usr/bin/env python3
"""Add up the results of every test phase into one closing line.

    summary.py [--rc N] [--core FILE] [NAME=]FILE.xml ...

Reads JUnit XML files (pytest's --junitxml, vm/run-tests.sh's harness
checks; ``make test`` names each kernel's pair, e.g. ``vm-6.1=`` and
``vm-6.1-harness=``) and the ``host-core: N passed, N failed`` line that
``make -C kmod/host test`` prints, shows one line per source, then prints
``N passed, N failed, N skipped`` as its last line. A source that is missing
or unreadable counts as one failure, and so does a non-zero ``--rc`` (the
status of the steps that produced the files) when nothing else failed, so the
line never says 0 failed for a run that did not pass. Exits 1 if anything
failed. Standard library only: it runs before and without the venv too.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

CORE_RE = re.compile(r"host-core:\s*(\d+) passed,\s*(\d+) failed(?:,\s*(\d+) skipped)?")


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.passed = self.failed = self.skipped = 0
        self.notes: list[str] = []

    def broken(self, why: str) -> Tally:
        self.failed += 1
        self.notes.append(f"{why} (counted as 1 failed)")
        return self


def read_junit(name: str, path: Path) -> Tally:
    t = Tally(name)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        return t.broken(f"{path}: missing")
    except (ET.ParseError, OSError) as e:
        return t.broken(f"{path}: unreadable: {e}")
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            t.failed += 1
            msg = next(c for c in case if c.tag in ("failure", "error")).get(
                "message", ""
            )
            cls = case.get("classname", "")
            t.notes.append(
                f"FAILED {cls}::{case.get('name', '?')} {msg[:200]}".rstrip()
            )
        elif "skipped" in tags:
            t.skipped += 1
        else:
            t.passed += 1
    if t.passed + t.failed + t.skipped == 0:
        t.broken(f"{path}: no test ran")
    return t


def read_core(path: Path) -> Tally:
    t = Tally("host-core")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return t.broken(f"{path}: missing")
    found = CORE_RE.findall(text)
    if not found:
        return t.broken(f"{path}: no 'host-core: N passed, N failed' line")
    passed, failed, skipped = found[-1]
    t.passed, t.failed, t.skipped = int(passed), int(failed), int(skipped or 0)
    return t


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rc", type=int, default=0, help="exit status of the steps")
    ap.add_argument("--core", type=Path, help="output of make -C kmod/host test")
    ap.add_argument("xml", nargs="*", help="[NAME=]junit.xml")
    args = ap.parse_args(argv)

    tallies = []
    if args.core:
        tallies.append(read_core(args.core))
    for spec in args.xml:
        name, sep, file = spec.partition("=")
        if not sep:
            name, file = Path(spec).stem, spec
        tallies.append(read_junit(name, Path(file)))

    total = Tally("total")
    for t in tallies:
        total.passed += t.passed
        total.failed += t.failed
        total.skipped += t.skipped
    if args.rc and not total.failed:
        total.broken(f"a step exited with status {args.rc}; see its output above")

    print()
    # names such as vm-6.12-harness (one pair per kernel) set the column
    width = max([12, *(len(t.name) for t in tallies)])
    for t in tallies:
        for note in t.notes:
            print(f"  {t.name}: {note}")
        print(
            f"  {t.name:<{width}} {t.passed:5d} passed {t.failed:5d} failed"
            f" {t.skipped:5d} skipped"
        )
    for note in total.notes:
        print(f"  {note}")
    print(f"{total.passed} passed, {total.failed} failed, {total.skipped} skipped")
    return 1 if total.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
