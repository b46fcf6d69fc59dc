"""Write-back uploads: files closed with ``--write-back`` wait in the spool
(spool.py), queued in the catalog (queuestore.py), and go up here,
``transfers`` at once, so a tree of small files is not sent one round trip
at a time.

A file waits ``settle`` seconds after its close before it goes, so that a
rename right after the close (rsync's ``.NAME.XXXXXX`` to ``NAME``) lands
before its description is written. ``fsync`` of the file and ``glacierfs
umount`` skip the wait. A file smaller than a part goes up in one
UploadArchive, its body read from the spool as it is sent; a larger one goes
multipart, one such file at a time, with the parts' own concurrency, so memory
stays within the Writer's bound. One large file at a time starts its upload
while it is still written (earlyupload.py), so writing it to the spool and
sending it overlap; its parts share the same slots. A failed attempt is
logged, kept, and tried again with a growing pause; nothing leaves the spool
until Glacier has stored it, or the file is removed or replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from glacierfs import errors, names
from glacierfs.cache import ContentCache, Incoming
from glacierfs.catalog import Catalog, Entry, UploadTrail
from glacierfs.deletions import Deletions
from glacierfs.earlyupload import EarlyUpload
from glacierfs.glacier import GlacierClient
from glacierfs.queuestore import FAILED, UPLOADING, QueuedFile, QueueStore
from glacierfs.records import Archive
from glacierfs.spool import Spool, Spooled, SpoolFile
from glacierfs.treehash import MiB, TreeHasher, file_tree_hash
from glacierfs.writer import PartBuffers, Uploader

log = logging.getLogger(__name__)

FIRST_PAUSE = 5.0  # seconds before a failed upload is tried again; doubled each time
LONGEST_PAUSE = 15 * 60.0


class Interrupted(Exception):
    """The mount stops: an upload under way is given up, to be sent again next time."""


class Removed(Exception):
    """The file left the queue while its upload was under way: nothing more is sent."""


class UploadQueue:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        spool: Spool,
        deletions: Deletions,
        namespace: threading.RLock,
        changed: Callable[[str], None],
        *,
        transfers: int,
        settle: float,
        part_size: int,
        concurrency: int,
        part_buffers: PartBuffers,
        cache: ContentCache | None = None,
    ) -> None:
        self.glacier = glacier
        self.cache = cache  # --cache-writes: a stored file's spool copy enters the cache
        self.store = QueueStore(catalog)
        self.spool = spool
        self.deletions = deletions
        self.namespace = namespace  # held while a queued file's name and entry change together
        self._changed = changed
        self.transfers = max(1, transfers)
        self.settle = settle
        self.part_size = part_size
        self.concurrency = concurrency
        self.part_buffers = part_buffers
        self._wake = threading.Condition()  # a file queued, hurried, stored or failed
        self._slots = threading.BoundedSemaphore(self.transfers)
        self._multipart = threading.Lock()  # one large file at a time from the queue: memory stays bounded
        self._part_slots = threading.BoundedSemaphore(max(1, concurrency))  # parts in flight, all files
        self._early: dict[str, EarlyUpload] = {}  # spool id -> its upload started while written (one at most)
        self._early_slot = threading.Lock()  # held from an early upload's start to its end, by whichever thread
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._transfers: ThreadPoolExecutor | None = None
        self._parts: ThreadPoolExecutor | None = None
        self._upload_ids: set[str] = set()  # multipart uploads in flight
        self._ids_lock = threading.Lock()
        self._sent = 0  # bytes stored since the mount, for progress

    # Life -------------------------------------------------------------------

    def start(self) -> None:
        self._check_spool()
        for item in self.store.interrupted_by_crash():
            self._doubt(item)
        self._transfers = ThreadPoolExecutor(self.transfers, thread_name_prefix="transfer")
        self._parts = ThreadPoolExecutor(max(1, self.concurrency), thread_name_prefix="part")
        self._dispatcher = threading.Thread(target=self._dispatch, name="write-back", daemon=True)
        self._dispatcher.start()
        self._report(logging.INFO, "%d file(s) (%d bytes) are queued for upload from the spool %s")

    def _report(self, level: int, message: str) -> None:
        """Log ``message`` with the files, bytes and spool of the queue, unless it is empty."""
        queued = self.store.all()
        if queued:
            log.log(level, message, len(queued), sum(item.size for item in queued), self.spool.directory)

    def _doubt(self, item: QueuedFile) -> None:
        """The mount died during this file's upload, which Glacier may have stored."""
        decoded = names.decode(item.description or "")
        try:
            tree = file_tree_hash(self.spool.path(item.spool_id))
        except OSError as error:
            log.error("%s/%s: its spool file cannot be read: %s", item.vault, item.path, error)
            return
        self.store.doubt(item, decoded.path if decoded else item.path, tree)
        log.warning(
            "%s/%s was being uploaded when glacierfs stopped; it is sent again (if that first attempt was "
            "stored too, the next inventory shows the copy and it is deleted)",
            item.vault,
            item.path,
        )

    def _check_spool(self) -> None:
        """Spool files no row names were open when the mount died: never closed,
        never queued. Rows whose file is gone cannot be sent: they fail, loudly."""
        rows = {item.spool_id: item for item in self.store.all()}
        for spool_id in self.spool.ids() - rows.keys():
            log.warning("removed spool file %s: it was still open for writing when glacierfs stopped", spool_id)
            self.spool.remove(spool_id)
        for spool_id, item in rows.items():
            if self.spool.size(spool_id) != item.size:
                reason = f"its spool file {self.spool.path(spool_id)} is missing or has changed size"
                log.error("%s/%s cannot be uploaded: %s", item.vault, item.path, reason)
                self.store.failed(spool_id, reason, next_try=float("inf"))

    def stop(self) -> None:
        """Uploads under way are given up (a multipart one is aborted) and stay
        queued for the next mount."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.join()
        for early in list(self._early.values()):
            early.give_up()
        for pool in (self._transfers, self._parts):
            if pool is not None:
                pool.shutdown(wait=True)
        self.spool.close()
        self._report(
            logging.WARNING,
            "unmounted with %d file(s) (%d bytes) not yet uploaded; they stay in %s and go up at the next mount",
        )

    # Entering and leaving the queue -----------------------------------------

    def add(self, entry: Entry, spooled: Spooled, replaces: list[str]) -> None:
        """A file closed: queue it (call under the namespace lock). A file
        queued under the name before is replaced, and its spool file goes."""
        item = QueuedFile(
            spooled.spool_id, entry.vault, entry.path, spooled.size, time.time(), replaces=tuple(replaces)
        )
        displaced = self.store.add(entry, item)
        if displaced is not None:
            self._give_up_early(displaced.spool_id)
            self.spool.remove(displaced.spool_id)
        with self._wake:
            self._wake.notify_all()

    def follow(self, file: SpoolFile, name: Callable[[], tuple[str, str]]) -> None:
        """Start ``file``'s upload once a part of it is written, under the
        ``name()`` (vault, path) it has then, if no other file's has started."""
        file.follow(self.part_size, lambda: self._start_early(file, *name()))

    def _start_early(self, file: SpoolFile, vault: str, path: str) -> None:
        if self._stopping.is_set() or "/.~tmp~/" in f"/{path}" or not names.fits(path):
            return  # --delay-updates: the name is not the real one yet
        if not self._early_slot.acquire(blocking=False):
            return  # another file's is under way: this one goes up after its close
        assert self._parts is not None
        try:
            early = EarlyUpload(
                self.glacier,
                file,
                vault,
                path,
                executor=self._parts,
                slots=self._part_slots,
                buffers=self.part_buffers,
                trail=self._trail(vault, path),
                stopping=self._stopping,
                dropped=self._early_ended,
            )
        except Exception as error:  # noqa: BLE001 - the write goes on; the file goes up after its close
            self._early_slot.release()
            log.warning("%s/%s: its upload cannot start while it is written: %s", vault, path, error)
            return
        self._early[file.spool_id] = early
        early.start()
        log.debug("%s/%s: its upload starts while it is written", vault, path)

    def _early_ended(self, early: EarlyUpload) -> None:
        if self._early.get(early.file.spool_id) is early:
            del self._early[early.file.spool_id]
        with self._ids_lock:  # an abort Glacier refused: the janitor's now
            self._upload_ids.discard(early.upload_id or "")
        self._early_slot.release()

    def _give_up_early(self, spool_id: str) -> None:
        """A file removed or replaced: its early upload is aborted, on a transfer
        thread (the caller may hold the namespace lock, under which nothing talks
        to Glacier). A finish under way returns None from now on."""
        early = self._early.get(spool_id)
        if early is None:
            return
        early.cancel()
        try:
            if self._transfers is not None:
                self._transfers.submit(early.give_up)
                return
        except RuntimeError:  # the pool has shut down: the mount stops
            pass
        early.give_up()

    def take(self, vault: str, path: str) -> QueuedFile | None:
        """Take the file queued under this name out of the queue, as it is
        removed or replaced (call under the namespace lock); ``dispose`` of it
        once the lock is let go."""
        return self.store.remove_at(vault, path)

    def dispose(self, item: QueuedFile) -> None:
        """A file taken out of the queue is not uploaded (if it is uploading
        now, its archive is deleted once stored), and the archives it was to
        replace are retired."""
        log.info("%s/%s is not uploaded: removed or replaced while it was queued", item.vault, item.path)
        self._give_up_early(item.spool_id)
        if item.status != UPLOADING:
            self.spool.remove(item.spool_id)
        for archive_id in item.replaces:
            self.deletions.retire(item.vault, archive_id, item.path)

    def open(self, vault: str, path: str) -> BinaryIO | None:
        """The spool file of the file queued under this name; None if none is."""
        item = self.store.at(vault, path)
        if item is None:
            return None
        try:
            return self.spool.open(item.spool_id)
        except errors.GlacierFSError:
            return None  # stored a moment ago: its spool file went

    def wait_stored(self, vault: str, path: str) -> None:
        """fsync: send the file queued under this name now, and return once it
        is stored; raise if the attempt fails."""
        item = self.store.at(vault, path)
        if item is None:
            return
        self.store.hurry(item.spool_id)
        failures = item.attempts
        with self._wake:
            self._wake.notify_all()
            while True:
                now = self.store.get(item.spool_id)
                if now is None:
                    return
                if now.attempts > failures:
                    raise errors.GlacierFSError(f"{vault}/{path} is not stored: {now.error}")
                if self._stopping.is_set():
                    raise errors.GlacierFSError(f"{vault}/{path} is not stored: glacierfs is unmounting")
                self._wake.wait(1.0)

    def hurry(self) -> None:
        """Send everything queued now, failures included: ``glacierfs umount`` drains the queue."""
        self.store.hurry()
        with self._wake:
            self._wake.notify_all()

    def upload_ids(self) -> set[str]:
        """Multipart uploads in flight (the janitor leaves them alone)."""
        with self._ids_lock:
            return set(self._upload_ids)

    def state_of(self, vault: str, path: str) -> str | None:
        """``user.glacier.state`` of a queued file: queued, uploading, or failed: why."""
        item = self.store.at(vault, path)
        if item is None:
            return None
        if item.status == FAILED:
            return f"failed: {item.error} (attempt {item.attempts}; tried again at {time.ctime(item.next_try)})"
        return item.status if item.status == UPLOADING else "queued"

    def status(self) -> dict[str, object]:
        items = self.store.all()
        now = time.time()
        due = [item for item in items if item.status != FAILED or item.next_try <= now]
        return {
            "files": len(items),
            "bytes": sum(item.size for item in items),
            "pending": len(due),  # waiting, uploading, or failed and due again: a drain waits for these
            "uploading": [f"{item.vault}/{item.path}" for item in items if item.status == UPLOADING],
            "failed": [
                {"path": f"{item.vault}/{item.path}", "error": item.error, "attempts": item.attempts}
                for item in items
                if item.status == FAILED
            ],
            "sent_bytes": self._sent,
            "spool": str(self.spool.directory),
        }

    # Sending -----------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            self._slots.acquire()
            try:
                item = None
                if not self._stopping.is_set():
                    item = self.store.claim_next(time.time(), self.settle, lambda path: names.encode(path, time.time()))
            except Exception:  # a full state disk, say: the queue must not stop for it
                log.exception("the upload queue cannot be read; looking again in %.0f s", FIRST_PAUSE)
                self._slots.release()
                self._stopping.wait(FIRST_PAUSE)
                continue
            if item is None:
                self._slots.release()
                self._sleep()
                continue
            assert self._transfers is not None
            self._transfers.submit(self._send, item)

    def _sleep(self) -> None:
        try:
            due = self.store.next_due(time.time(), self.settle)
        except Exception:
            log.exception("the upload queue cannot be read; looking again in %.0f s", FIRST_PAUSE)
            due = time.time() + FIRST_PAUSE
        with self._wake:
            if self._stopping.is_set():
                return
            self._wake.wait(None if due is None else max(0.01, due - time.time()))

    def _send(self, item: QueuedFile) -> None:
        try:
            archive = self._upload(item)
        except Interrupted:
            self.store.interrupted(item.spool_id)
            return
        except Removed:
            self.spool.remove(item.spool_id)
            return
        except Exception as error:  # noqa: BLE001 - kept, logged, and tried again
            self._failed(item, error)
            return
        finally:
            self._slots.release()
        try:
            self._stored(item, archive)
        except Exception:  # the state disk, say: Glacier has it, the catalog does not say so yet
            log.exception(
                "%s/%s was stored as archive %s, but that could not be recorded; it stays queued and is sent "
                "again at the next mount, whose inventory then deletes one of the two",
                item.vault,
                item.path,
                archive.archive_id[:16],
            )

    def _upload(self, item: QueuedFile) -> Archive:
        assert item.description is not None
        early = self._early.get(item.spool_id)
        if early is not None:
            archive = early.finish(item.vault, item.path, item.size)
            if archive is not None:
                return archive
            if self._stopping.is_set():
                raise Interrupted()
            if self.store.get(item.spool_id) is None:
                raise Removed()  # removed or replaced meanwhile: nothing more is sent
        with self.spool.open(item.spool_id) as body:
            if item.size < self.part_size:
                linear, tree = _hashes(body)
                body.seek(0)
                return self.glacier.upload_archive(item.vault, body, item.description, (linear, tree))
            with self._multipart:
                return self._upload_parts(item, body)

    def _upload_parts(self, item: QueuedFile, body: BinaryIO) -> Archive:
        assert self._parts is not None and item.description is not None
        uploader = Uploader(
            self.glacier,
            item.vault,
            item.description,
            self.part_size,
            self._parts,
            self.concurrency,
            trail=self._trail(item.vault, item.path),
            buffers=self.part_buffers,
            slots=self._part_slots,
        )
        try:
            try:
                for offset in range(0, item.size - item.size % self.part_size, self.part_size):
                    if self._stopping.is_set():
                        raise Interrupted()
                    part = self.part_buffers.take_whole()
                    if os.preadv(body.fileno(), [part], offset) != self.part_size:
                        raise errors.GlacierFSError(f"spool file {item.spool_id} is shorter than {item.size} bytes")
                    uploader.add(offset, part)
                tail_offset = item.size - item.size % self.part_size
                tail = os.pread(body.fileno(), item.size - tail_offset, tail_offset)
            except BaseException:
                uploader.abort()
                raise
            stored = uploader.finish(tail_offset, tail)  # aborts the upload itself if it fails
        finally:
            with self._ids_lock:
                self._upload_ids.discard(uploader.upload_id or "")
        assert stored is not None
        return stored.archive

    def _trail(self, vault: str, path: str) -> UploadTrail:
        return _InFlight(self.store.catalog, vault, path, self.part_size, self._upload_ids, self._ids_lock)

    def _stored(self, item: QueuedFile, archive: Archive) -> None:
        with self.namespace:
            kept = self.store.stored(item.spool_id, archive.archive_id, archive.tree_hash)
        self._sent += item.size
        if kept is None:
            log.warning(
                "%s/%s was removed or replaced while it uploaded: deleting archive %s, just stored",
                item.vault,
                item.path,
                archive.archive_id[:16],
            )
            self.deletions.retire(item.vault, archive.archive_id, item.path)
        else:
            log.info("stored %s/%s (%d bytes) as archive %s", kept.vault, kept.path, kept.size, archive.archive_id[:16])
            if self.cache is not None:
                self._keep_copy(item, archive)
            self._changed(kept.vault)
            for archive_id in kept.replaces:
                self.deletions.retire(kept.vault, archive_id, kept.path)
        self.spool.remove(item.spool_id)
        with self._wake:
            self._wake.notify_all()

    def _keep_copy(self, item: QueuedFile, archive: Archive) -> None:
        """--cache-writes: reading one's own file back costs no retrieval."""
        assert self.cache is not None
        copy = Incoming(self.cache)
        try:
            with self.spool.open(item.spool_id) as spooled:
                offset = 0
                while chunk := spooled.read(4 * MiB):
                    copy.write(offset, chunk)
                    offset += len(chunk)
        except (OSError, errors.GlacierFSError) as error:
            log.warning("no copy of %s/%s in the cache: %s", item.vault, item.path, error)
            copy.discard()
            return
        copy.keep(archive.archive_id, item.size, archive.tree_hash)

    def _failed(self, item: QueuedFile, error: Exception) -> None:
        current = self.store.get(item.spool_id)
        if current is None:  # removed while it was being sent: nothing to keep
            self.spool.remove(item.spool_id)
            return
        pause = min(LONGEST_PAUSE, FIRST_PAUSE * 2**current.attempts)
        log.error(
            "upload of %s/%s failed (attempt %d), kept in the spool and tried again in %.0f s: %s",
            current.vault,
            current.path,
            current.attempts + 1,
            pause,
            error,
        )
        self.store.failed(item.spool_id, str(error) or type(error).__name__, time.time() + pause)
        with self._wake:
            self._wake.notify_all()


class _InFlight(UploadTrail):
    """The catalog's trail of an upload, and the queue's set of those in
    flight, which the janitor leaves alone."""

    def __init__(
        self, catalog: Catalog, vault: str, path: str, part_size: int, in_flight: set[str], lock: threading.Lock
    ) -> None:
        super().__init__(catalog, vault, path, part_size)
        self._in_flight = in_flight
        self._lock = lock

    def started(self, upload_id: str) -> None:
        with self._lock:
            self._in_flight.add(upload_id)
        super().started(upload_id)

    def ended(self, upload_id: str) -> None:
        with self._lock:
            self._in_flight.discard(upload_id)
        super().ended(upload_id)


def _hashes(body: BinaryIO) -> tuple[str, str]:
    """(linear SHA-256, tree hash) of a file, read once in 1 MiB pieces."""
    linear, tree = hashlib.sha256(), TreeHasher()
    while chunk := body.read(MiB):
        linear.update(chunk)
        tree.update(chunk)
    return linear.hexdigest(), tree.hexdigest()
