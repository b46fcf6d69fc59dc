"""Open files: a write handle over an upload, a read handle over retrieved bytes.

As rclone's vfs keeps write.go apart from read.go, the two kinds of open file
share nothing but a name.

A write handle moves through explicit states: open -> committing -> stored or
failed, or open -> aborted. Commit, abort, and the retirement of the archives a
new upload replaces all happen in ``outcomes.Outcomes``, and only there.

The commit rule. FUSE sends ``flush`` on every close() of every descriptor of
an open file, including descriptors that children inherited
(``{ a; b; } > f``, ``exec >log``, ``make > log 2>&1``), and ``release`` once,
after the last, when no close() is waiting to hear an error any more. So the
archive is completed at the flush after which no process known to use the file
- the one that opened it, and any other that wrote to or closed it - still
holds a descriptor of it. Earlier flushes wait for the parts sent so far and
report their failures. A close that completes the archive fails if Glacier did
not store it. A release that follows no flush at all comes from an open the
kernel refused after we answered it (a passthrough conflict): it aborts, so
such an open changes nothing. Unmounting aborts every upload still open.

Lock order: a handle's ``lock``, then the namespace lock (``OpenFiles.lock``),
then the catalog's. ``Outcomes`` (outcomes.py) records a write's end under the
namespace lock, in the same step as the handle's new state, so a rename sees
either an upload still under way (and leaves it the files to retire) or one
already recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, BinaryIO

from glacierfs import errors
from glacierfs.cache import Incoming
from glacierfs.catalog import Entry
from glacierfs.retrieval import Retriever
from glacierfs.spool import Spooled, SpoolFile
from glacierfs.writer import Writer

if TYPE_CHECKING:
    from glacierfs.outcomes import Outcomes

log = logging.getLogger(__name__)

READ_AHEAD = 16 << 20  # a cached archive is prefetched this far ahead of its reader


class WriteState(StrEnum):
    OPEN = "open"
    COMMITTING = "committing"
    STORED = "stored"
    SPOOLED = "spooled"  # --write-back: durable in the spool and queued (writeback.py)
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Closer:
    """Who closes a descriptor (a FUSE flush): its process (thread group), None
    when FUSE cannot tell us, and what the kernel says of processes: whether one
    still holds a descriptor of the file (None: cannot tell), its descendants,
    and whether it is dying of a signal (see glacierfs.processes)."""

    process: int | None
    holds: Callable[[int], bool | None]
    descendants: Callable[[int], set[int]] = lambda _process: set()
    killed: Callable[[int], bool] = lambda _process: False


class WriteHandle:
    """One file open for writing: an upload that becomes an archive, or nothing."""

    def __init__(
        self,
        vault: str,
        path: str,
        writer: Writer | SpoolFile,
        outcomes: Outcomes,
        opener: int | None,
        replaces: list[Entry],
        copy: Incoming | None = None,
    ) -> None:
        self.vault = vault
        self.path = path
        self.writer = writer
        self.opener = opener
        self.replaces = replaces  # stored files whose archives go once this one is stored
        self.copy = copy  # --cache-writes: the copy that becomes the cached archive
        self.state = WriteState.OPEN
        self.lock = threading.Lock()
        self._outcomes = outcomes
        self._flushed = False
        self._synced = False  # fsync'd while open: --write-back's last close waits for Glacier
        self._sharers: set[int] = set()  # other processes seen writing, closing or holding it
        self.error: BaseException | None = None  # why it failed or was aborted
        # The file's mtime: its last write, or the open that emptied it; None
        # while neither happened, or once a utimens came after (cp -p, rsync,
        # tar set it last): the catalog's is the file's then.
        self.modified_ns: int | None = None

    @property
    def writing(self) -> bool:
        """The upload is under way: the name is not free to read, remove or replace."""
        return self.state in (WriteState.OPEN, WriteState.COMMITTING)

    @property
    def size(self) -> int:
        return self.writer.size

    def _require_open(self) -> None:
        if self.state is WriteState.OPEN:
            return
        if self.state in (WriteState.STORED, WriteState.SPOOLED):
            raise errors.ReadOnly(
                f"{self.vault}/{self.path} was {self.state} when the last process known to write it closed it; "
                "an archive cannot grow afterwards"
            )
        raise self.error or errors.GlacierFSError(f"the upload of {self.vault}/{self.path} has ended")

    def _note(self, process: int | None) -> None:
        if process is not None and process != self.opener:
            self._sharers.add(process)

    def write(self, offset: int, data: bytes | memoryview, process: int | None) -> int:
        with self.lock:
            self._require_open()
            self._note(process)
            written = self.writer.write(offset, data)
            self.modified_ns = time.time_ns()
            return written

    def truncate(self, length: int) -> None:
        with self.lock:
            self._require_open()
            self.writer.truncate(length)
            self.modified_ns = time.time_ns()

    def times_set(self) -> None:
        """A utimens while it is open: the time it set is the file's, unless written after."""
        with self.lock:
            self.modified_ns = None

    def stamped(self, entry: Entry) -> Entry:
        """``entry`` with this file's mtime."""
        return entry if self.modified_ns is None else entry.but(mtime_ns=self.modified_ns)

    def fsync(self) -> None:
        with self.lock:
            if self.state is WriteState.OPEN:
                self.writer.sync()
                self._synced = True
            elif self.error is not None:
                raise self.error

    def flush(self, closer: Closer) -> None:
        """A close(): complete the archive if it was the last one (see the module's rule)."""
        with self.lock:
            self._flushed = True
            if self.state is not WriteState.OPEN:
                if self.error is not None:
                    raise self.error  # every close of the file hears that it was not stored
                return
            self._note(closer.process)
            if not self._is_last_close(closer):
                self.writer.sync()
            elif closer.process is not None and closer.killed(closer.process):
                # A killed cp, or a killed editor: what it wrote is part of a file at best.
                self._abort(f"process {closer.process}, the last to hold it open, was killed by a signal")
                raise self.error or errors.GlacierFSError("aborted")
            else:
                self._commit(report=True)

    def _is_last_close(self, closer: Closer) -> bool:
        if closer.process is None or self.opener is None:
            # FUSE names no process (another PID namespace): an empty file waits for
            # data or the release, as a shell opens, dup2s and closes before writing.
            return self.writer.size > 0
        users = {self.opener, *self._sharers}
        for process in list(users):  # children that inherited it but have not written yet
            users |= closer.descendants(process)
        holding = {process for process in users if closer.holds(process)}
        self._sharers |= holding - {self.opener}  # known users from now on, whoever their parent
        return not holding

    def release(self) -> None:
        """The last descriptor is gone. A close that no flush preceded never
        reached a process: abort. An upload no flush completed completes here,
        though no close() hears how it went (the log and user.glacier.state do)."""
        with self.lock:
            if self.state is not WriteState.OPEN:
                return
            if not self._flushed:
                self._abort("the kernel refused the open after glacierfs had answered it")
                return
            with contextlib.suppress(Exception):  # Outcomes.failed logged it; no close() is there to tell
                self._commit()

    def abort(self, reason: str) -> None:
        with self.lock:
            if self.state is WriteState.OPEN:
                self._abort(reason)

    def _abort(self, reason: str) -> None:
        self.writer.abort()
        self._outcomes.aborted(self, reason)

    def _commit(self, report: bool = False) -> None:
        """Complete the archive (or, --write-back, the spool file); Outcomes
        records how it went, and the new state. A program that fsync'd a
        --write-back file (`dd conv=fsync`, `rsync --fsync`, editors) hears at
        its close (``report``) whether Glacier stored it."""
        self.state = WriteState.COMMITTING
        try:
            result = self.writer.close()
        except BaseException as error:
            self._outcomes.failed(self, error)
            raise
        if isinstance(result, Spooled):
            self._outcomes.spooled(self, result)
            if report and self._synced:
                self._outcomes.queue.wait_stored(self.vault, self.path)
        else:
            self._outcomes.stored(self, result)

    def close(self) -> None:
        if self.copy is not None:
            self.copy.discard()
            self.copy = None


class ReadHandle:
    """One file open for reading: the whole cached archive, or (large archives)
    the blocks retrieved as reads reach them. Empty files have neither. What
    to fetch, and whether to wait, is the retriever's (retrieval.py)."""

    def __init__(self, vault: str, path: str, retriever: Retriever, wait_seconds: float) -> None:
        self.vault = vault
        self.path = path
        self.retriever = retriever
        self.wait_seconds = wait_seconds
        self.reader: BinaryIO | None = None
        self.ranged: Entry | None = None
        self.blocks: dict[int, BinaryIO] = {}
        self.lock = threading.Lock()
        self._deferred: Entry | None = None  # opened at the first read (O_NONBLOCK)

    def open(self, entry: Entry) -> None:
        """Fetch the whole archive, or (a large one) only what is cached of it:
        its blocks are retrieved as reads reach them."""
        target = self.retriever.target(entry)
        if self.retriever.is_ranged(entry.size):
            self.reader = self.retriever.open_cached(target)
            if self.reader is None:
                self.ranged = entry
            return
        self.reader = self.retriever.fetch(target, f"{self.vault}/{self.path}", self.wait_seconds)

    def defer(self, entry: Entry) -> None:
        """Open at the first read, not now: an open that never reads pays for nothing."""
        self._deferred = entry

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Read into ``buffer`` at ``offset``; the count read (short only at the end
        of the file, or of a block of a large archive)."""
        if self._deferred is not None:
            with self.lock:
                if self._deferred is not None:
                    self.open(self._deferred)
                    self._deferred = None
        if self.reader is not None:
            fd = self.reader.fileno()
            # FUSE asks in 128 KiB pieces, one after another: each time a read enters
            # a new READ_AHEAD step, have the disk fetch the two steps after it meanwhile.
            if offset == 0 or offset // READ_AHEAD != (offset + len(buffer)) // READ_AHEAD:
                os.posix_fadvise(fd, (offset // READ_AHEAD + 1) * READ_AHEAD, 2 * READ_AHEAD, os.POSIX_FADV_WILLNEED)
            return os.preadv(fd, [buffer], offset)
        entry = self.ranged
        if entry is None or offset >= entry.size:
            return 0
        target = self.retriever.target(entry, offset)  # the aligned block holding offset
        with self.lock:
            block = self.blocks.get(target.first)
            if block is None:
                block = self.retriever.fetch(target, f"{self.vault}/{self.path}", self.wait_seconds)
                self.blocks[target.first] = block
        wanted = min(len(buffer), target.last + 1 - offset)
        return os.preadv(block.fileno(), [buffer[:wanted]], offset - target.first)

    def close(self) -> None:
        for handle in [self.reader, *self.blocks.values()]:
            if handle is not None:
                handle.close()
        self.reader, self.blocks = None, {}


Handle = WriteHandle | ReadHandle
