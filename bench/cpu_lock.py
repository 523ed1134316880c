"""Whether a benchmark runs under the machine's shared CPU lock (``flock /tmp/cpu.lock ...``), for its report."""

from __future__ import annotations

import fcntl

__all__ = ["CPU_LOCK", "lock_held"]

CPU_LOCK = "/tmp/cpu.lock"
"""The lock file heavy jobs on the shared machine take with ``flock``."""


def lock_held(path: str = CPU_LOCK) -> bool:
    """True when another open file (normally this run's ``flock``) holds ``path``; False when it is free or absent."""
    try:
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
