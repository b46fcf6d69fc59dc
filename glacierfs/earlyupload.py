"""A large file's multipart upload, started from its spool file while the file
is still being written (``--write-back``).

Without it, a large file's bytes go to the spool first and up only after its
close, so the disk write and the upload add up instead of overlapping: 1 GiB
went at 0.59 x plain boto3, against 0.97 x when the file streams straight to
Glacier. Here a thread of its own reads each part from the spool once the
writer has written it in order, and sends it; the queue (writeback.py)
completes the upload once the file is closed, settled and claimed, with the
last short part. The writer never waits for Glacier: the parts trail it.

Nothing is trusted that may have changed since it was sent. The upload is
dropped (aborted; the queue then sends the file from the spool as usual) when
a write lands in bytes already read, when the file was renamed away from the
name its description records, when the writer is killed or the mount stops,
or when a part fails. Its multipart upload is recorded in the catalog as it
starts, so after a crash the janitor aborts it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from glacierfs import errors, names
from glacierfs.records import Archive
from glacierfs.spool import ABORTED, SpoolFile
from glacierfs.writer import PartBuffers, Trail, Uploader

if TYPE_CHECKING:
    from glacierfs.glacier import GlacierClient

log = logging.getLogger(__name__)


class EarlyUpload:
    """One spool file's upload, under way while it is written (see the module)."""

    def __init__(
        self,
        glacier: GlacierClient,
        file: SpoolFile,
        vault: str,
        path: str,
        *,
        executor: Executor,
        slots: threading.Semaphore,
        buffers: PartBuffers,
        trail: Trail,
        stopping: threading.Event,
        dropped: Callable[[EarlyUpload], None],
    ) -> None:
        self.file = file
        self.vault = vault
        self.path = path  # the name its description records
        self.part_size = buffers.part_size
        self._uploader = Uploader(
            glacier,
            vault,
            names.encode(path, time.time()),
            self.part_size,
            executor,
            0,  # parts in flight are bounded by the shared ``slots``
            trail=trail,
            buffers=buffers,
            slots=slots,
        )
        self._buffers = buffers
        self._stopping = stopping
        self._dropped = dropped
        self._given_up = threading.Event()
        self._sent = 0  # bytes handed to the uploader, whole parts from the start
        self._ended = False
        self._end_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="early-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _stop(self) -> bool:
        return self._stopping.is_set() or self._given_up.is_set()

    def _run(self) -> None:
        try:
            while self.file.claim(self._sent + self.part_size, self._stop):
                part = self._buffers.take_whole()
                if self._read(part, self._sent) != self.part_size:
                    raise errors.GlacierFSError(f"spool file {self.file.spool_id} is shorter than it was written")
                self._uploader.add(self._sent, part)
                self._sent += self.part_size
        except Exception as error:  # noqa: BLE001 - the queue sends the file from the spool instead
            log.warning("%s/%s: its upload started while it was written failed: %s", self.vault, self.path, error)
            self._uploader.fail(error)
        reason = self._unusable()
        if reason is not None:
            self._drop(reason)

    def _unusable(self, name: tuple[str, str] | None = None) -> str | None:
        """Why this upload cannot become the file's archive; None if it can."""
        if self._stopping.is_set() or self._given_up.is_set():
            return "the mount stops, or the file is no longer queued"
        if self.file.ended == ABORTED:
            return "the file was not kept"
        if self.file.diverged:
            return "bytes already sent were written again"
        try:
            self._uploader.check()
        except BaseException as error:  # noqa: BLE001 - a reason, not a failure of the caller
            return f"a part failed: {error}"
        if name is not None and name != (self.vault, self.path):
            return f"renamed to {name[0]}/{name[1]}"
        return None

    def finish(self, vault: str, path: str, size: int) -> Archive | None:
        """The archive of the closed, queued file now named ``path``: the last
        part sent and the upload completed. None if this upload cannot be it
        (then it is aborted, and the caller sends the file from the spool)."""
        self._thread.join()
        reason = self._unusable((vault, path))
        if reason is None and self._sent + self.part_size <= size:
            reason = "it was not read to its end"
        if reason is not None:
            self._drop(reason)
            return None
        if not self._take():
            return None
        try:
            tail = bytearray(size - self._sent)
            if self._read(tail, self._sent) != len(tail):
                raise errors.GlacierFSError(f"spool file {self.file.spool_id} is shorter than {size} bytes")
            stored = self._uploader.finish(self._sent, tail)  # aborts the upload itself if it fails
        finally:
            self._release()
        assert stored is not None
        return stored.archive

    def _read(self, buffer: bytearray, offset: int) -> int:
        """Opened for each part: a descriptor kept open would keep the disk space
        of a spool file removed meanwhile (a full spool, a writer killed).

        Nobody reads these bytes again, so their page cache is let go: the
        part just read is written back to disk now (DONTNEED starts that for
        dirty pages), and the part before it, clean by then, is dropped. A
        large file then does not fill the page cache, close()'s fsync finds
        less left to write, and where the upload keeps pace with the writer,
        the writer's next pages reuse that memory: on this machine, memory
        not touched for a while costs about 4 x more to fill than memory just
        freed (0.93 s against 0.21 s of CPU per GiB written)."""
        with self.file.spool.open(self.file.spool_id) as spooled:
            count = os.preadv(spooled.fileno(), [buffer], offset)
            os.posix_fadvise(spooled.fileno(), max(0, offset - len(buffer)), 2 * len(buffer), os.POSIX_FADV_DONTNEED)
        return count

    @property
    def upload_id(self) -> str | None:
        return self._uploader.upload_id

    def cancel(self) -> None:
        """From now on this upload is not the file's: a finish returns None."""
        self._given_up.set()

    def give_up(self) -> None:
        """The file left the queue, or the mount stops: abort what was sent."""
        self.cancel()
        self._thread.join()
        self._drop("the mount stops, or the file is no longer queued")

    def _take(self) -> bool:
        """Whether this caller ends the upload (once: finish, or a drop)."""
        with self._end_lock:
            taken, self._ended = not self._ended, True
        return taken

    def _drop(self, reason: str) -> None:
        if not self._take():
            return
        log.info("%s/%s: dropped the upload started while it was written: %s", self.vault, self.path, reason)
        try:
            self._uploader.abort()
        finally:
            self._release()

    def _release(self) -> None:
        self._dropped(self)
