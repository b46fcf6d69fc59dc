"""The write-back spool: files whose bytes are durable on local disk and wait
for their upload (writeback.py).

A file written with ``--write-back`` goes to a spool file of its own, named by
a spool id, instead of straight to Glacier: close() returns once the file is
fsync'd here and queued in the catalog, and the upload happens later. A spool
file is the only copy of its bytes until Glacier stores them, so the directory
is private (0700, files 0600), a byte the disk cannot keep is refused at
write() with ENOSPC, and nothing here is removed except by the queue, once
the archive is stored or the file is removed or replaced.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from glacierfs import errors, lockfile
from glacierfs.cache import pwrite_all
from glacierfs.treehash import Buffer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spooled:
    """A closed spool file: what the queue needs to send it."""

    spool_id: str
    size: int


def _os_error(error: OSError, what: str) -> errors.GlacierFSError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.NoSpace(f"the spool is full, {what} is refused: {error}")
    return errors.GlacierFSError(f"the spool cannot {what}: {error}")


LOCK = ".lock"
CLOSED = "closed"  # SpoolFile.ended
ABORTED = "aborted"


class Spool:
    """One mount's spool, held with a lock: a second mount given the same
    directory would take this one's files for a crash's leftovers."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # the only copy of what it holds, until stored
        self.directory = directory
        self._lock: int | None = lockfile.hold(
            directory / LOCK,
            lambda holder: (
                f"the spool {directory} is in use by another glacierfs mount (pid {holder}); "
                "give each mount a --spool-dir of its own"
            ),
        )

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def path(self, spool_id: str) -> Path:
        return self.directory / spool_id

    def create(self, max_size: int) -> SpoolFile:
        """A new spool file that refuses to grow past ``max_size`` (what the
        upload's 10,000 parts can hold), as a direct upload would."""
        spool_id = uuid.uuid4().hex
        try:
            fd = os.open(self.path(spool_id), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise _os_error(error, "create a file") from error
        return SpoolFile(self, spool_id, fd, max_size)

    def open(self, spool_id: str) -> BinaryIO:
        try:
            return open(self.path(spool_id), "rb")
        except FileNotFoundError as error:
            raise errors.GlacierFSError(f"spool file {spool_id} is gone: {error}") from error

    def size(self, spool_id: str) -> int | None:
        try:
            return self.path(spool_id).stat().st_size
        except FileNotFoundError:
            return None

    def remove(self, spool_id: str) -> None:
        self.path(spool_id).unlink(missing_ok=True)

    def ids(self) -> set[str]:
        return {entry.name for entry in os.scandir(self.directory) if entry.is_file() and entry.name != LOCK}


class SpoolFile:
    """One file being written into the spool. Any offset may be written: unlike
    an upload, the spool has no "already sent". A write the spool refused
    leaves the file short of what its writer meant, so, as with a failed
    upload, its close fails too and nothing is queued.

    A large file's upload may start while it is still written (earlyupload.py):
    it ``claim``s the bytes it reads, up to where the writes have been
    sequential so far, and a later write or truncation below what it claimed
    marks the file ``diverged``, so that upload is dropped rather than
    completed with stale bytes. The spool copy itself is always right."""

    def __init__(self, spool: Spool, spool_id: str, fd: int, max_size: int) -> None:
        self.spool = spool
        self.spool_id = spool_id
        self.max_size = max_size
        self._fd: int | None = fd
        self._size = 0
        self._failure: errors.GlacierFSError | None = None
        self._guard = threading.Condition()  # a write or claim at a time; claims wait for writes
        self._contiguous = 0  # bytes from offset 0 written without a gap, as a copy writes
        self._claimed = 0  # bytes an early upload has read
        self.diverged = False  # a write landed in bytes an early upload has read
        self.ended: str | None = None  # CLOSED or ABORTED
        self._follower: tuple[int, Callable[[], None]] | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def upload_id(self) -> None:
        return None  # an early upload belongs to the queue, not to the open file

    @property
    def parts_done(self) -> int:
        return 0

    def _require_fd(self) -> int:
        if self._fd is None:
            raise errors.GlacierFSError("this file's spool copy is closed")
        return self._fd

    def follow(self, threshold: int, start: Callable[[], None]) -> None:
        """Call ``start`` once, in the writer's thread, when the first
        ``threshold`` bytes have been written in order."""
        self._follower = (threshold, start)

    def _check_limit(self, end: int) -> None:
        if end > self.max_size:
            raise errors.FileTooLarge(
                f"{end} bytes is past the largest file {self.max_size} that 10,000 parts allow; "
                "remount with a larger --part-size"
            )

    def write(self, offset: int, data: Buffer) -> int:
        fd = self._require_fd()
        view = memoryview(data).cast("B")
        end = offset + len(view)
        self._check_limit(end)
        with self._guard:
            if offset < self._claimed:
                self.diverged = True
            try:
                pwrite_all(fd, view, offset)
            except OSError as error:
                os.ftruncate(fd, self._size)  # what part of it landed past the old end is not kept
                self._failure = _os_error(error, f"a write of {len(view)} bytes")
                raise self._failure from error
            self._size = max(self._size, end)
            if offset <= self._contiguous < end:
                self._contiguous = end
            self._guard.notify_all()
        if self._follower is not None and self._contiguous >= self._follower[0]:
            start, self._follower = self._follower[1], None
            start()
        return len(view)

    def truncate(self, length: int) -> None:
        fd = self._require_fd()
        self._check_limit(length)
        with self._guard:
            if length < self._claimed:
                self.diverged = True
            try:
                os.ftruncate(fd, length)
            except OSError as error:
                raise _os_error(error, f"grow to {length} bytes") from error
            self._size = length
            self._contiguous = min(self._contiguous, length)
            self._guard.notify_all()

    def claim(self, end: int, stop: Callable[[], bool]) -> bool:
        """Wait until the bytes up to ``end`` are written in order (or the file is
        closed and that long), and mark them read; False once they never will be:
        the file ended short, was aborted or diverged, or ``stop()``."""
        with self._guard:
            while not (self.diverged or self.ended == ABORTED or stop()):
                if (self._size if self.ended else self._contiguous) >= end:
                    self._claimed = end
                    return True
                if self.ended:
                    break
                self._guard.wait(1.0)
            return False

    def _end(self, how: str) -> None:
        with self._guard:
            self.ended = how
            self._guard.notify_all()

    def sync(self) -> None:
        try:
            os.fdatasync(self._require_fd())
        except OSError as error:
            raise _os_error(error, "sync") from error

    def close(self) -> Spooled:
        """The bytes are durable: fsync'd, or this raises and the file is gone."""
        fd = self._require_fd()
        self._fd = None
        try:
            if self._failure is not None:
                raise self._failure
            os.fsync(fd)
        except OSError as error:
            self._end(ABORTED)
            self.spool.remove(self.spool_id)
            raise _os_error(error, "keep the file") from error
        except BaseException:
            self._end(ABORTED)
            self.spool.remove(self.spool_id)
            raise
        finally:
            os.close(fd)
        self._end(CLOSED)
        return Spooled(self.spool_id, self._size)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._end(ABORTED)
        self.spool.remove(self.spool_id)
