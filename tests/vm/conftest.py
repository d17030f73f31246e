"""Fixtures for the tests that talk to ckpt.ko: skipped where /dev/ckpt is absent."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trees
from vmhelpers import Fds

from pyckpt import DEVICE, Context, Policy

NEEDS_DEVICE = (
    f"needs {DEVICE} (ckpt.ko loaded): run through vm/run.sh or vm/run-tests.sh"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.path.exists(DEVICE):
        return
    skip = pytest.mark.skip(reason=NEEDS_DEVICE)
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if os.path.abspath(str(item.fspath)).startswith(here + os.sep):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _ignore_sigpipe() -> Iterator[None]:
    # a write to a pipe with no reader must come back as EPIPE, not kill pytest
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, old)


@pytest.fixture
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


@pytest.fixture
def make_ctx() -> Iterator[Callable[..., Context]]:
    """Open more contexts; all closed at the end of the test."""
    opened: list[Context] = []

    def make(policy: Policy | None = None, **kw: Any) -> Context:
        c = Context(policy=policy, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def observer() -> Iterator[Context]:
    """A second context, only to read the module-wide counters."""
    with Context() as c:
        yield c


@pytest.fixture
def fds() -> Iterator[Fds]:
    tracked = Fds()
    yield tracked
    tracked.close_all()


@pytest.fixture
def pipe(fds: Fds) -> Callable[[], tuple[int, int]]:
    """Non-blocking pipes: a read with no data says EAGAIN instead of blocking."""

    def make() -> tuple[int, int]:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        fds.add(r, w)
        return r, w

    return make


@pytest.fixture
def spawn() -> Iterator[Callable[..., trees.Tree]]:
    """spawn(body, pass_fds=()): a tree (trees.spawn), killed after the test;
    we are the subreaper meanwhile, so that every task comes back to us."""
    made: list[trees.Tree] = []
    trees.set_subreaper(True)

    def make(
        body: Callable[[trees.Member], None], pass_fds: tuple[int, ...] = ()
    ) -> trees.Tree:
        t = trees.spawn(body, pass_fds)
        made.append(t)
        return t

    try:
        yield make
    finally:
        for t in made:
            t.kill()
        trees.set_subreaper(False)
