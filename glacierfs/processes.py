"""What the kernel says about the processes that use an open file (stdlib only).

FUSE names the thread behind each request but not how many descriptors still
refer to an open file; /proc does. Everything here reads the kernel's own
tables (never the mount), and answers None where it cannot tell.
"""

from __future__ import annotations

import os

PF_SIGNALED = 0x00000400  # include/linux/sched.h: the task was killed by a signal
FUSE_TYPE = b"fuse.glacierfs"


def process_of(thread: int) -> int | None:
    """The process (thread group) of the thread FUSE names; None if unknown."""
    if thread <= 0:
        return None  # the caller lives outside our PID namespace
    try:
        with open(f"/proc/{thread}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def command_of(process: int | None) -> str | None:
    """The process's command name (``/proc/PID/comm``); None if it cannot be read."""
    if process is None:
        return None
    try:
        with open(f"/proc/{process}/comm", "rb") as comm:
            return comm.read().decode(errors="replace").strip()
    except OSError:
        return None


def killed_by_signal(process: int) -> bool:
    """Whether ``process`` is dying of a signal (its descriptors close as it dies)."""
    try:
        with open(f"/proc/{process}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    try:
        return bool(int(fields[6]) & PF_SIGNALED)  # field 9, the flags, after pid and comm
    except (IndexError, ValueError):
        return False


def descendants(process: int) -> set[int]:
    """Every child of ``process``, theirs, and so on (they may hold inherited descriptors)."""
    found: set[int] = set()
    pending = [process]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as children:
                    for child in map(int, children.read().split()):
                        if child not in found:
                            found.add(child)
                            pending.append(child)
            except (OSError, ValueError):
                continue
    return found


def holds_file(process: int, suffix: bytes) -> bool | None:
    """Whether ``process`` has a descriptor open on a glacierfs file whose path
    ends with ``suffix`` (the file's path inside its vault). Only the end of the
    path is compared, so the file is found through a bind mount, after a lazy
    unmount (its mount is then in no table), or from a chroot; a file on another
    filesystem does not count. None if the process's descriptors cannot be read."""
    folder = f"/proc/{process}/fd"
    try:
        descriptors = os.listdir(folder)
    except FileNotFoundError:
        return False  # the process is gone
    except OSError:
        return None
    mounts: dict[bytes, bytes] | None = None
    for descriptor in descriptors:
        try:
            if not os.readlink(f"{folder}/{descriptor}".encode()).endswith(suffix):
                continue
            if mounts is None:
                mounts = _mount_types(process)
            if mounts.get(_mount_id(process, descriptor) or b"", FUSE_TYPE) == FUSE_TYPE:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def _mount_id(process: int, descriptor: str) -> bytes | None:
    with open(f"/proc/{process}/fdinfo/{descriptor}", "rb") as info:
        for line in info:
            if line.startswith(b"mnt_id:"):
                return line.split()[1]
    return None


def _mount_types(process: int) -> dict[bytes, bytes]:
    """Mount id -> filesystem type of the mounts ``process`` sees."""
    types = {}
    try:
        with open(f"/proc/{process}/mountinfo", "rb") as table:
            for line in table:
                fields = line.split()
                types[fields[0]] = fields[fields.index(b"-") + 1]
    except (OSError, ValueError, IndexError):
        pass
    return types
