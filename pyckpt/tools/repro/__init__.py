"""Scenarios that reproduce what each seed post changed, on the real module.

``pyckpt repro NAME`` runs one (in the VM, where /dev/ckpt exists) and prints
a side-by-side table; ``--json`` prints the same figures for scripts.  Each
scenario module has ``run(policies) -> Report``; the VM tests assert on the
Report, so the table a person reads is the one the tests check.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyckpt.abi import Policy

__all__ = ["POLICY_ORDER", "SCENARIOS", "Report", "run"]

# name -> (module, seed post it reproduces)
SCENARIOS: dict[str, tuple[str, str]] = {
    "halfpipe": ("pyckpt.tools.repro.halfpipe", "000"),
    "deferqueue": ("pyckpt.tools.repro.deferqueue", "002"),
    "epoll": ("pyckpt.tools.repro.epoll", "003"),
    "header": ("pyckpt.tools.repro.header", "004"),
}

# before the patch, the cost Oren asked about, the v2 patch
POLICY_ORDER = (Policy.CLEAR_AT_END, Policy.FREE_UPFRONT, Policy.CLEAR_EARLY)


def policy_name(p: Policy) -> str:
    return p.name.lower().replace("_", "-")


@dataclass
class Report:
    """One scenario's outcome: a table for people, data for scripts, and the
    seed's claims checked against what was seen."""

    scenario: str
    seed: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, claim: str) -> None:
        self.checks.append((claim, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)

    def row(self, key: str) -> dict[str, str]:
        """The row whose first cell is key, by column name."""
        for r in self.rows:
            if r[0] == key:
                return dict(zip(self.columns, r, strict=True))
        raise KeyError(key)

    def render(self) -> str:
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
            for i, c in enumerate(self.columns)
        ]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        out = [f"{self.scenario} (seed {self.seed}): {self.title}", ""]
        out.append(line(self.columns))
        out.append(line(["-" * w for w in widths]))
        out.extend(line(r) for r in self.rows)
        if self.notes:
            out.append("")
            out.extend(self.notes)
        out.append("")
        for claim, ok in self.checks:
            out.append(f"{'ok ' if ok else 'NOT'}  {claim}")
        return "\n".join(out) + "\n"

    def to_json(self) -> str:
        return json.dumps(
            {
                "scenario": self.scenario,
                "seed": self.seed,
                "title": self.title,
                "columns": self.columns,
                "rows": self.rows,
                "data": self.data,
                "checks": [{"claim": c, "ok": ok} for c, ok in self.checks],
                "ok": self.ok,
            },
            indent=1,
        )


def run(name: str, policies: Sequence[Policy] | None = None) -> Report:
    """Run scenario name under policies (None: the scenario's default)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (one of: {', '.join(SCENARIOS)})")
    mod = importlib.import_module(SCENARIOS[name][0])
    return mod.run(tuple(policies) if policies else mod.DEFAULT_POLICIES)
