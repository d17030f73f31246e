"""Shared pytest setup: tests/host run anywhere, tests/vm need /dev/ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "kmod" / "include" / "uapi" / "ckpt.h"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: needs /dev/ckpt (runs inside the VM)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # mark by location so `-m vm` / `-m "not vm"` select a side
    vm_dir = Path(__file__).resolve().parent / "vm"
    for item in items:
        if vm_dir in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def header_text() -> str:
    return HEADER.read_text()
