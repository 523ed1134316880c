"""Worker processes that end with the process that started them.

Spawned pool workers outlive a killed parent by default: a killed ``cascade train`` left its fold and class
processes training on, and a killed ``cascade synth --workers N`` left its drawing processes asleep. Every pool
the project starts passes :func:`die_with_parent` as (or calls it from) its initializer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["die_with_parent"]


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this process when the process that started it dies (Linux ``PR_SET_PDEATHSIG``).

    Args:
        parent: the starting process's pid (``os.getpid()`` there, passed through ``initargs``); if it has already
            died when this runs, the process exits at once.

    Elsewhere (no ``prctl``) the processes still end with the terminal's Ctrl-C, which reaches the whole group.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
