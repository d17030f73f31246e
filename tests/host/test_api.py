"""The package's public surface: module names that no function shadows, one
exception root."""

from __future__ import annotations

import importlib

import pytest

import pyckpt


@pytest.mark.parametrize("name", ["checkpointer", "restarter", "image", "api"])
def test_submodule_is_a_module(name: str) -> None:
    # `import pyckpt.X as m` must give the module, never a function of the
    # package that shadows it (pyckpt.checkpoint used to)
    m = importlib.import_module(f"pyckpt.{name}")
    ns: dict = {}
    exec(f"import pyckpt.{name} as m", ns)
    assert ns["m"] is m
    assert type(m).__name__ == "module"


def test_api_functions() -> None:
    assert callable(pyckpt.checkpoint) and callable(pyckpt.restart)
    assert pyckpt.checkpoint.__module__ == "pyckpt.api"
    assert pyckpt.restart.__module__ == "pyckpt.api"
