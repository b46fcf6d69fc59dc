"""Open files: a write handle over an upload, a read handle over retrieved bytes.

As rclone's vfs keeps write.go apart from read.go, the two kinds of open file
share nothing but a name.

A write handle moves through explicit states: open -> committing -> stored or
failed, or open -> aborted. Commit, abort, and the retirement of the archives a
new upload replaces all happen in ``Outcomes``, and only there.

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

Lock order: a handle's ``lock``, then the namespace lock (the VFS's), then the
catalog's. ``Outcomes`` records a write's end under the namespace lock, in the
same step as the handle's new state, so a rename sees either an upload still
under way (and leaves it the files to retire) or one already recorded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import BinaryIO

from glacierfs import errors, timestamps
from glacierfs.cache import Incoming
from glacierfs.catalog import EMPTY, FILE, STORED, UPLOADING, Catalog, Entry, new_entry
from glacierfs.glacier import GlacierClient
from glacierfs.writer import Stored, Writer

log = logging.getLogger(__name__)


class WriteState(StrEnum):
    OPEN = "open"
    COMMITTING = "committing"
    STORED = "stored"
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


class Outcomes:
    """What a finished, failed or abandoned upload does to the catalog and to
    the archives it replaces. A stored file's old archives are deleted only
    after the new one is stored; if the new one is not, the name gets its old
    archive back.

    A catalog write that fails for want of disk space (``errors.NoSpace``) is
    not forgotten: the repair is kept and retried (``retry``) until there is
    room, and an archive Glacier stored but the catalog could not record is
    deleted then, so that close()'s ENOSPC stays true.
    """

    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        keep_replaced: bool,
        changed: Callable[[str], None],
        namespace: threading.RLock,
    ) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.keep_replaced = keep_replaced
        self.namespace = namespace  # held while a name and the handles' paths change together
        self._changed = changed
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._pending_lock = threading.Lock()

    def stored(self, handle: WriteHandle, stored: Stored | None) -> None:
        unrecorded: errors.NoSpace | None = None
        with self.namespace:
            entry = self.catalog.get(handle.vault, handle.path) or new_entry(handle.vault, handle.path, FILE, 0o644)
            if stored is None:
                entry = entry.but(size=0, state=EMPTY, archive_id=None, tree_hash=None, created=None)
            else:
                entry = entry.but(
                    size=stored.size,
                    state=STORED,
                    archive_id=stored.archive.archive_id,
                    tree_hash=stored.archive.tree_hash,
                    created=timestamps.iso(time.time()),
                )
            try:
                self.catalog.put(entry)
                handle.state = WriteState.STORED
                replaced = list(handle.replaces)
            except errors.NoSpace as error:
                handle.state, handle.error = WriteState.FAILED, error
                unrecorded = error
        if unrecorded is not None:
            if stored is not None:
                log.error(
                    "%s/%s was stored as archive %s, but the state directory is full and cannot record it: "
                    "close() fails with ENOSPC, and the archive is deleted once there is room",
                    handle.vault,
                    handle.path,
                    stored.archive.archive_id[:16],
                )
                archive = entry.but(path=handle.path)
                self._later(
                    f"delete unrecorded archive {stored.archive.archive_id[:16]}", lambda: self.delete_archive(archive)
                )
            self._later(f"restore {handle.vault}/{handle.path}", lambda: self._restore(handle))
            if handle.copy is not None:
                handle.copy.discard()
            raise unrecorded
        self._changed(handle.vault)
        if handle.copy is not None and stored is not None:
            handle.copy.keep(stored.archive.archive_id, stored.size, stored.archive.tree_hash)
        log.info(
            "stored %s/%s (%d bytes) as archive %s",
            handle.vault,
            handle.path,
            entry.size,
            (entry.archive_id or "-")[:16],
        )
        for old in replaced:
            if old.archive_id != entry.archive_id:
                self.retire(old)

    def failed(self, handle: WriteHandle, error: BaseException) -> None:
        log.error("upload of %s/%s failed, nothing was stored: %s", handle.vault, handle.path, error)
        self._undo(handle, WriteState.FAILED, error)

    def aborted(self, handle: WriteHandle, reason: str) -> None:
        log.error("upload of %s/%s aborted, nothing was stored: %s", handle.vault, handle.path, reason)
        error = errors.GlacierFSError(f"the upload of {handle.vault}/{handle.path} was aborted: {reason}")
        self._undo(handle, WriteState.ABORTED, error)

    def _undo(self, handle: WriteHandle, state: WriteState, error: BaseException) -> None:
        if handle.copy is not None:
            handle.copy.discard()
        with self.namespace:
            handle.state, handle.error = state, error
            try:
                self._restore(handle)
            except errors.NoSpace:
                self._later(f"restore {handle.vault}/{handle.path}", lambda: self._restore(handle))

    def _restore(self, handle: WriteHandle) -> None:
        """The name goes back to what it held before the upload: the newest file
        it replaced, or nothing."""
        with self.namespace:
            if handle.replaces:
                self.catalog.put(handle.replaces[-1].but(path=handle.path))
                return
            entry = self.catalog.get(handle.vault, handle.path)
            if entry is not None and entry.state == UPLOADING:
                self.catalog.delete(handle.vault, handle.path)

    def retire(self, entry: Entry) -> None:
        """Delete the archive of a file that was replaced, unless told to keep it."""
        if not entry.archive_id:
            return
        if self.keep_replaced:
            log.info("kept archive %s of replaced %s/%s", entry.archive_id[:16], entry.vault, entry.path)
            return
        try:
            self.delete_archive(entry)
            log.info("deleted archive %s of replaced %s/%s", entry.archive_id[:16], entry.vault, entry.path)
        except errors.NotFound:
            pass
        except errors.GlacierFSError as error:
            log.error(
                "could not delete archive %s of replaced %s/%s; it stays in the vault: %s",
                entry.archive_id,
                entry.vault,
                entry.path,
                error,
            )

    def delete_archive(self, entry: Entry) -> None:
        """DeleteArchive, remembered first so that inventories (which lag) do not bring it back."""
        assert entry.archive_id is not None
        self.catalog.record_deleted(entry.vault, entry.archive_id)
        with contextlib.suppress(errors.NotFound):
            self.glacier.delete_archive(entry.vault, entry.archive_id)

    def _later(self, what: str, repair: Callable[[], None]) -> None:
        with self._pending_lock:
            self._pending.append((what, repair))

    @property
    def pending(self) -> list[str]:
        with self._pending_lock:
            return [what for what, _ in self._pending]

    def retry(self) -> None:
        """Try the repairs a full disk (or an outage while deleting) held back, oldest first."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for index, (what, repair) in enumerate(pending):
            try:
                repair()
                log.info("done now that there is room: %s", what)
            except errors.GlacierFSError as error:
                log.warning("still waiting to %s: %s", what, error)
                with self._pending_lock:
                    self._pending[:0] = pending[index:]
                return


class WriteHandle:
    """One file open for writing: an upload that becomes an archive, or nothing."""

    def __init__(
        self,
        vault: str,
        path: str,
        writer: Writer,
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
        self._sharers: set[int] = set()  # other processes seen writing, closing or holding it
        self.error: BaseException | None = None  # why it failed or was aborted

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
        if self.state is WriteState.STORED:
            raise errors.ReadOnly(
                f"{self.vault}/{self.path} was stored when the last process known to write it closed it; "
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
            return self.writer.write(offset, data)

    def truncate(self, length: int) -> None:
        with self.lock:
            self._require_open()
            self.writer.truncate(length)

    def fsync(self) -> None:
        with self.lock:
            if self.state is WriteState.OPEN:
                self.writer.sync()
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
                self._commit()

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

    def _commit(self) -> None:
        """Complete the archive; Outcomes records how it went, and the new state."""
        self.state = WriteState.COMMITTING
        try:
            stored = self.writer.close()
        except BaseException as error:
            self._outcomes.failed(self, error)
            raise
        self._outcomes.stored(self, stored)

    def close(self) -> None:
        if self.copy is not None:
            self.copy.discard()
            self.copy = None


@dataclass
class ReadHandle:
    """One file open for reading: the whole cached archive, or (large archives)
    the blocks retrieved as reads reach them. Empty files have neither."""

    vault: str
    path: str
    reader: BinaryIO | None = None
    ranged: Entry | None = None
    blocks: dict[int, BinaryIO] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        for handle in [self.reader, *self.blocks.values()]:
            if handle is not None:
                handle.close()
        self.reader, self.blocks = None, {}


Handle = WriteHandle | ReadHandle
