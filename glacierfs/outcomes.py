"""What becomes of an upload, in one place: a finished one is recorded and the
archives it replaces retired; a failed or abandoned one gives the name back
what it held. The janitor repairs, in the background, what could not be done
at once: catalog writes a full disk held back, and multipart uploads that no
open file owns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from glacierfs import errors, names, timestamps
from glacierfs.catalog import EMPTY, FILE, INITIATING, SESSION, STORED, UPLOADING, Catalog, Entry, new_entry
from glacierfs.deletions import Deletions
from glacierfs.glacier import GlacierClient
from glacierfs.handles import WriteHandle, WriteState
from glacierfs.openfiles import OpenFiles
from glacierfs.periodic import Periodic
from glacierfs.spool import Spooled
from glacierfs.writeback import UploadQueue
from glacierfs.writer import PartBuffers, Stored

log = logging.getLogger(__name__)

PART_BUFFER_IDLE_SECONDS = 60.0  # idle part buffers are given back to the system after this
# An initiation of this mount unanswered for this long has failed (botocore gives up well before).
UNANSWERED_AFTER = 15 * 60.0
CLOCK_SKEW = 5 * 60.0  # between this machine's clock and the service's CreationDate
MOUNTED_AT = time.time()  # this process's start: a crashed mount's initiations came before it


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
        catalog: Catalog,
        deletions: Deletions,
        queue: UploadQueue,
        changed: Callable[[str], None],
        namespace: threading.RLock,
    ) -> None:
        self.catalog = catalog
        self.deletions = deletions
        self.queue = queue
        self.namespace = namespace  # held while a name and the handles' paths change together
        self._changed = changed
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._pending_lock = threading.Lock()

    def _replaced(self, handle: WriteHandle, current: Entry | None) -> list[Entry]:
        """What the file replaces: what it was opened over, and what holds the
        name now if that differs (a queued file stored while this one was
        written). Call under the namespace lock."""
        replaced = list(handle.replaces)
        if current is not None and current.archive_id and all(old.archive_id != current.archive_id for old in replaced):
            replaced.append(current)
        return replaced

    def stored(self, handle: WriteHandle, stored: Stored | None) -> None:
        unrecorded: errors.NoSpace | None = None
        displaced = None
        with self.namespace:
            current = self.catalog.get(handle.vault, handle.path)
            entry = handle.stamped(current or new_entry(handle.vault, handle.path, FILE, 0o644))
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
                replaced = self._replaced(handle, current)
                displaced = self.queue.take(handle.vault, handle.path)  # a queued file it replaces
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
                archive_id = stored.archive.archive_id
                self._later(
                    f"delete unrecorded archive {archive_id[:16]}",
                    lambda: self.deletions.delete(handle.vault, archive_id),
                )
            self._later(f"restore {handle.vault}/{handle.path}", lambda: self._restore(handle))
            if handle.copy is not None:
                handle.copy.discard()
            raise unrecorded
        if displaced is not None:
            self.queue.dispose(displaced)
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
                self.deletions.retire_entry(old)

    def spooled(self, handle: WriteHandle, spooled: Spooled) -> None:
        """--write-back: the file is durable in the spool; queue it. Its upload,
        and the retirement of what it replaces, happen later (writeback.py)."""
        if spooled.size == 0:  # Glacier keeps no empty archives: the catalog alone has it
            self.queue.spool.remove(spooled.spool_id)
            self.stored(handle, None)
            return
        with self.namespace:
            current = self.catalog.get(handle.vault, handle.path)
            entry = handle.stamped(current or new_entry(handle.vault, handle.path, FILE, 0o644))
            replaces = [old.archive_id for old in self._replaced(handle, current) if old.archive_id]
            try:
                self.queue.add(entry, spooled, replaces)
                handle.state = WriteState.SPOOLED
            except errors.NoSpace as error:
                handle.state, handle.error = WriteState.FAILED, error
                self.queue.spool.remove(spooled.spool_id)
                self._later(f"restore {handle.vault}/{handle.path}", lambda: self._restore(handle))
                log.error("%s/%s cannot be queued: the state directory is full: %s", handle.vault, handle.path, error)
                raise
        self._changed(handle.vault)
        log.debug("queued %s/%s (%d bytes) for upload", handle.vault, handle.path, spooled.size)

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


class Janitor:
    """Every ``interval`` seconds, and once more at unmount: retry held-back
    repairs, abort multipart uploads no open file owns, give idle part buffers
    back to the system."""

    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        outcomes: Outcomes,
        open_files: OpenFiles,
        queue: UploadQueue,
        part_buffers: PartBuffers,
        interval: float,
    ) -> None:
        self.queue = queue
        self.glacier = glacier
        self.catalog = catalog
        self.outcomes = outcomes
        self.open_files = open_files
        self.part_buffers = part_buffers
        # The first round aborts the multipart uploads a crash left open.
        self._periodic = Periodic("janitor", interval, self.sweep)

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        """At unmount, after every open file was closed or aborted."""
        self._periodic.stop()
        self.outcomes.retry()
        for waiting in self.outcomes.pending:
            log.error(
                "unmounted before there was room to %s; an archive left in Glacier comes back with "
                "the next inventory (under a name with .older- if the name is taken)",
                waiting,
            )
        self.abort_abandoned_uploads()

    def sweep(self) -> None:
        self.outcomes.retry()
        self.abort_abandoned_uploads()
        self.part_buffers.trim(idle_seconds=PART_BUFFER_IDLE_SECONDS)

    def abort_abandoned_uploads(self) -> None:
        """Abort multipart uploads the catalog knows of that no open file owns:
        left by a crash, or by an abort Glacier refused. Until aborted they linger
        (and the service keeps their parts) for 24 hours."""
        # Read the catalog first: an upload started after this read is not looked at,
        # and one read here belongs to an open file until that file is released,
        # completion included.
        recorded = self.catalog.uploads()
        owned = self._owned()
        for upload_id, vault, path, started in recorded:
            if upload_id.startswith(INITIATING):
                self._abort_unanswered(upload_id, vault, path, started)
                continue
            if upload_id in owned:
                continue
            if self._abort(vault, upload_id, path):
                self.catalog.forget_upload(upload_id)

    def _owned(self) -> set[str | None]:
        return {handle.writer.upload_id for handle in self.open_files.uploads()} | self.queue.upload_ids()

    def _abort(self, vault: str, upload_id: str, path: str) -> bool:
        """Whether the upload is gone."""
        try:
            self.glacier.abort_multipart(vault, upload_id)
            log.info("aborted abandoned multipart upload of %s/%s", vault, path)
        except errors.NotFound:
            pass
        except errors.GlacierFSError as error:
            log.warning("abandoned multipart upload of %s/%s not aborted yet: %s", vault, path, error)
            return False
        return True

    def _abort_unanswered(self, placeholder: str, vault: str, path: str, started: float) -> None:
        """An initiation whose answer was never recorded (a crash, or a timeout
        that Glacier may have acted on): abort the uploads Glacier holds open
        under that name, started about then, that nobody records."""
        ours = placeholder.startswith(f"{INITIATING}{SESSION}:")
        if ours and started > time.time() - UNANSWERED_AFTER:
            return  # an initiation of this mount, maybe under way
        try:
            pending = list(self.glacier.list_multipart_uploads(vault))
        except errors.NotFound:
            pending = []
        except errors.GlacierFSError as error:
            log.warning("cannot look for an unrecorded multipart upload of %s/%s yet: %s", vault, path, error)
            return
        # Read after the listing: an upload of the same name sent since (the
        # file sent again after the crash) is recorded or owned by now.
        known = {row[0] for row in self.catalog.uploads()} | self._owned()
        # An initiation is answered, or given up, within UNANSWERED_AFTER, and a
        # crashed mount's before this mount began.
        latest = started + UNANSWERED_AFTER if ours else min(started + UNANSWERED_AFTER, MOUNTED_AT)
        for upload in pending:
            decoded = names.decode(upload.description)
            if upload.upload_id in known or decoded is None or decoded.path != path:
                continue
            if upload.created and not started - CLOCK_SKEW <= upload.created <= latest + CLOCK_SKEW:
                continue
            self._abort(vault, upload.upload_id, path)
        self.catalog.forget_upload(placeholder)
