"""One process at a time: a lock file held with flock for as long as the
process lives (the kernel lets go of it when the process dies, even by
kill -9), holding the holder's PID for the message a second one gets.

The catalog, the spool and an export's state each take one: a second mount
or export on them would take the first one's work in flight for a crash's
leftovers.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from glacierfs import errors


def hold(path: Path, refusal: Callable[[str], str]) -> int:
    """The held lock's descriptor (close it to let go); Busy, saying
    ``refusal(holder's pid)``, if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise errors.Busy(refusal(holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
