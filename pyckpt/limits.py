"""restart's limits, apart from the restarter so that the CLI can show their
defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one restart creates at most; an image asking for more is refused
    while it is read, at the first record that crosses a limit, and before
    anything is created (raise them deliberately: CLI --max-*)."""

    tasks: int = 1024
    fds: int = 1 << 20  # FD records over all tasks
    pipe_bytes: int = 256 << 20  # buffered pipe data over all pipes
    contents_bytes: int = 256 << 20  # memfd and deleted files' data, in all
    # argv and env strings, and supplementary groups, over all tasks: each
    # costs ~60 bytes parsed whatever its size (a 3-byte string too)
    strings: int = 1 << 20
    groups: int = 1 << 20
