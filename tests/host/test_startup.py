"""The CLI imports only what its verb needs (issue 11: `import pyckpt.cli`
took 3-5 s in the guest, all of it the checkpoint and restart machinery)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import pyckpt

# what only checkpoint, restart, show... need: never loaded to parse a command
HEAVY = (
    "psutil",
    "pyckpt.kinds",
    "pyckpt.checkpointer",
    "pyckpt.restarter",
    "pyckpt.image",
    "pyckpt.device",
    "hypothesis",
    "bcc",
)


def _loaded(code: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport sys, json\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["checkpoint", "--help"],
        ["restart", "--help"],
        ["show", "--help"],
        ["bench", "--help"],
    ],
)
def test_parsing_a_command_loads_no_machinery(argv: list[str]) -> None:
    code = (
        "import contextlib, io, pyckpt.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    pyckpt.cli.parse({argv!r})"
    )
    assert _loaded(code) == []


def test_import_pyckpt_is_cheap_and_names_still_resolve() -> None:
    assert _loaded("import pyckpt") == []
    # every public name resolves on first use, to the module that defines it
    for name in pyckpt.__all__:
        assert getattr(pyckpt, name) is not None
    assert pyckpt.checkpoint.__module__ == "pyckpt.api"
    with pytest.raises(AttributeError):
        pyckpt.no_such_name  # noqa: B018
