"""The package's public surface: module names that no function shadows, one
exception root."""

from __future__ import annotations

import importlib

import pytest

import pyckpt
from pyckpt import cli


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


def test_cli_refuses_untrusted_image_without_traceback(tmp_path, capsys) -> None:
    from pyckpt import cli
    from pyckpt.image import Head, Image

    p = tmp_path / "x.img"
    Image(head=Head(1.0, "Linux", "6.1", "#1", "x86_64")).save(p)
    p.chmod(0o664)
    assert cli.main(["restart", str(p)]) == 1
    err = capsys.readouterr().err
    assert "writable by its group" in err and "mode 0664" in err
    assert "Traceback" not in err


def test_cli_bad_image_no_traceback(tmp_path, capsys) -> None:
    from pyckpt import cli

    p = tmp_path / "junk.img"
    p.write_bytes(b"\0" * 40)
    assert cli.main(["show", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyckpt show: image offset 0:") and "Traceback" not in err


def test_cli_internal_error_no_traceback(monkeypatch, capsys) -> None:
    from pyckpt import cli, show

    def boom(image):
        raise KeyError("bug")

    monkeypatch.setattr(show, "summary", boom)
    import pyckpt.image

    monkeypatch.setattr(pyckpt.image.Image, "from_bytes", classmethod(lambda c, d: d))
    assert cli.main(["show", "/proc/self/cmdline"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError('bug')" in err and "Traceback" not in err


def test_old_module_names_are_no_longer_shadowed_functions() -> None:
    # `import pyckpt.checkpoint as m` used to bind the function silently
    for name in ("checkpoint", "restart"):
        ns: dict = {}
        with pytest.raises(ModuleNotFoundError):
            exec(f"import pyckpt.{name} as m", ns)
        assert callable(getattr(pyckpt, name))


@pytest.mark.parametrize(
    ("argv", "policy", "command"),
    [
        # the README's order: options after the image, then -- CMD
        (["x.img", "--policy", "clear-at-end"], "clear-at-end", []),
        (
            ["x.img", "--policy", "clear-at-end", "--", "sleep", "-n"],
            "clear-at-end",
            ["sleep", "-n"],
        ),
        (
            ["--policy", "free-upfront", "x.img", "--", "--policy"],
            "free-upfront",
            ["--policy"],
        ),
        (["x.img", "--", "sleep", "1"], "clear-early", ["sleep", "1"]),
    ],
)
def test_restart_options_after_the_image_are_options(
    argv: list[str], policy: str, command: list[str]
) -> None:
    args = cli.parse(["restart", *argv])
    assert (args.policy, args.command) == (policy, command)


def test_trace_command_after_dashes() -> None:
    args = cli.parse(["trace", "--json", "--", "pyckpt", "repro", "--json"])
    assert args.json and args.command == ["pyckpt", "repro", "--json"]
