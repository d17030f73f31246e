"""restart's limits, apart from the restarter so that the CLI can show their
defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one restart creates at most; an image asking for more is refused
    before anything is created (raise them deliberately: CLI --max-*)."""

    tasks: int = 1024
    fds: int = 1 << 20  # FD records over all tasks
    pipe_bytes: int = 256 << 20  # buffered pipe data over all pipes
    contents_bytes: int = 256 << 20  # memfd and deleted files' data, in all
