"""``paused()``: no cyclic garbage collection while a tree waits on us.

A checkpoint holds several Python objects per fd while the tree is frozen
(and makes as many again writing the image), and a restart as many while
its tasks wait to run.  Reference counting frees them as usual; a
collection of the older generations would walk them all (0.1-0.3 s under
TCG at 10^4 fds) at a moment nobody chose.  Paused for the whole call, it
runs after it, if at all: by then most of those objects are freed.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disable the cyclic GC for the block; the caller's setting after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
