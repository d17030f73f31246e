"""Shared pytest setup: tests/host run anywhere, tests/vm need /dev/ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Time is no property of ours: a loaded CI machine or the TCG guest can take
# longer than hypothesis' default 200 ms deadline for one example.
settings.register_profile("pyckpt", deadline=None)
settings.load_profile("pyckpt")

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "kmod" / "include" / "uapi" / "ckpt.h"
IMAGE_HEADER = HEADER.with_name("ckpt_image.h")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: needs /dev/ckpt (runs inside the VM)")


VM_DIR = Path(__file__).parent / "vm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # mark by location so `-m vm` / `-m "not vm"` select a side; no resolve():
    # each one is a chain of lstat calls, seconds over 9p in the TCG guest
    for item in items:
        if item.path.is_relative_to(VM_DIR):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def header_text() -> str:
    # both uapi headers: the ioctl ABI and the image format
    return HEADER.read_text() + IMAGE_HEADER.read_text()
