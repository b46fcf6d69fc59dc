"""Streaming upload of one file: a partitioner re-chunks writes into parts, an
uploader hashes and sends them concurrently and completes the archive.

Memory stays at most part_size x (concurrency + 2): ``concurrency`` parts in
flight, one cut and waiting for a slot (or one filling), and the copy of the
last, short part at close. The multipart upload starts as
soon as a full part exists; a file shorter than one part goes up in a single
UploadArchive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from glacierfs import errors
from glacierfs.records import Archive
from glacierfs.treehash import Buffer, MiB, combine, part_hashes, tree_aligned

if TYPE_CHECKING:  # options.py imports this module for its sizes: it must not load boto3
    from glacierfs.glacier import GlacierClient

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 64 * MiB  # 10,000 parts of 64 MiB: files up to 625 GiB
MIN_PART_SIZE = MiB
MAX_PART_SIZE = 4096 * MiB


def check_part_size(part_size: int) -> int:
    if part_size < MIN_PART_SIZE or part_size > MAX_PART_SIZE or not tree_aligned(part_size):
        raise errors.InvalidRequest(f"part size {part_size} is not 1 MiB x 2^n between 1 MiB and 4 GiB")
    return part_size


class PartBuffers:
    """Part-sized buffers handed back once a part is sent, for the next part.

    Fresh memory for every part is pages the kernel must fault in and zero;
    reusing buffers made that cost (with per-request copies, a third of the
    daemon's CPU while writing, measured with py-spy) disappear. A new buffer
    starts empty and grows with the part (``bytearray(part_size)`` would zero
    64 MiB, ~40 ms, for every small file). At most ``keep`` idle buffers are
    kept, and ``trim`` drops those idle for long, so a daemon that has stopped
    writing gives its memory back.
    """

    def __init__(self, part_size: int, keep: int) -> None:
        self.part_size = part_size
        self._keep = keep
        self._idle: list[tuple[float, bytearray]] = []  # (given back at, buffer)
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._idle:
                return self._idle.pop()[1]
        return bytearray()

    def take_whole(self) -> bytearray:
        """A buffer of exactly a part, to read a part into (the spool's readers)."""
        part = self.take()
        return part if len(part) == self.part_size else bytearray(self.part_size)

    def give_back(self, part: object) -> None:
        if not isinstance(part, bytearray) or len(part) != self.part_size:
            return
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append((time.monotonic(), part))

    def trim(self, idle_seconds: float) -> None:
        """Drop the buffers idle for longer than ``idle_seconds``."""
        cutoff = time.monotonic() - idle_seconds
        with self._lock:
            self._idle = [(since, buffer) for since, buffer in self._idle if since >= cutoff]


class Partitioner:
    """Cuts a stream of sequential writes into parts; knows nothing of Glacier.

    Each write is copied once, straight into the buffer of the part it belongs
    to; a full part is that buffer itself (a ``bytearray``, which botocore
    takes as a body), owned by whoever sends it until it goes back to
    ``buffers``. A buffer holds at least ``filled`` bytes (a new one grows as it
    fills); bytes past ``filled`` are stale, so growth comes only from writes
    and explicit zeros, and no write starts past ``filled``.
    """

    def __init__(self, part_size: int, buffers: PartBuffers | None = None) -> None:
        self.part_size = part_size
        self._buffers = buffers if buffers is not None else PartBuffers(part_size, keep=0)
        self._buffer: bytearray | None = None
        self._filled = 0  # bytes of _buffer that belong to the file
        self._buffer_start = 0  # offset of the buffer's first byte in the file

    @property
    def size(self) -> int:
        return self._buffer_start + self._filled

    def _current(self) -> bytearray:
        if self._buffer is None:
            self._buffer = self._buffers.take()
        return self._buffer

    def write(self, offset: int, data: Buffer) -> Iterator[tuple[int, bytearray]]:
        """Take ``data`` at ``offset``, over any buffered bytes there (some tools
        rewrite a header); yield each part it completes, as (offset, buffer)."""
        if offset < self._buffer_start:
            raise errors.NotSequential(
                f"write at {offset} lands behind byte {self._buffer_start}, which was already sent"
            )
        yield from self.extend(offset)
        with memoryview(data) as raw:
            view = raw.cast("B")
            position = offset - self._buffer_start
            while view:
                count = min(len(view), self.part_size - position)
                self._current()[position : position + count] = view[:count]
                self._filled = max(self._filled, position + count)
                view, position = view[count:], position + count
                if self._filled == self.part_size:
                    yield self._cut()
                    position = 0

    def extend(self, length: int) -> Iterator[tuple[int, bytearray]]:
        """Grow the file to ``length`` with zeros (a hole, ftruncate, cp --sparse), part by part."""
        while self.size < length:
            end = min(length - self._buffer_start, self.part_size)
            self._current()[self._filled : end] = bytes(end - self._filled)
            self._filled = end
            if self._filled == self.part_size:
                yield self._cut()

    def shrink(self, length: int) -> None:
        if length < self._buffer_start:
            raise errors.NotSequential(
                f"cannot truncate to {length}: bytes up to {self._buffer_start} were already sent"
            )
        self._filled = min(self._filled, length - self._buffer_start)

    def _cut(self) -> tuple[int, bytearray]:
        part = (self._buffer_start, self._current())
        self._buffer, self._filled = None, 0
        self._buffer_start += self.part_size
        return part

    def tail(self) -> tuple[int, bytes]:
        """What is left once the stream ends: the last, short part (a copy; its
        buffer goes back at once)."""
        offset, tail = self._buffer_start, b""
        if self._buffer is not None:
            tail = bytes(memoryview(self._buffer)[: self._filled])
            self._buffers.give_back(self._buffer)
        self._buffer, self._filled = None, 0
        return offset, tail


class Trail(Protocol):
    """Where a multipart upload is recorded while it is open, so that a crash
    at any moment, even before Glacier has answered its initiation, leaves a
    trail for the janitor (catalog.UploadTrail)."""

    def starting(self) -> None: ...

    def started(self, upload_id: str) -> None: ...

    def ended(self, upload_id: str) -> None: ...


@dataclass(frozen=True)
class Stored:
    archive: Archive
    size: int


class Uploader:
    """Sends parts of one archive; each part is hashed and uploaded on the executor.

    ``tee`` is handed each part once Glacier has it, in that part's thread (so in
    no particular order), before the part's slot is freed: memory stays bounded
    by the concurrency, and a slow tee slows the writer, not the other parts.
    A tee must not raise (that would fail the upload) and must not keep the part:
    its buffer is reused once the tee returns."""

    def __init__(
        self,
        glacier: GlacierClient,
        vault: str,
        description: str,
        part_size: int,
        executor: Executor,
        concurrency: int,
        trail: Trail | None = None,
        tee: Callable[[int, bytes | bytearray], None] | None = None,
        buffers: PartBuffers | None = None,
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.glacier = glacier
        self.vault = vault
        self.description = description
        self.part_size = part_size
        self._executor = executor
        # Parts in flight; uploads that share memory share these (writeback.py).
        self._slots = slots if slots is not None else threading.BoundedSemaphore(concurrency)
        # Shared by the files of a mount; else parts in flight plus the one waiting.
        self.buffers = buffers if buffers is not None else PartBuffers(part_size, keep=concurrency + 1)
        self._trail = trail
        self._tee = tee
        self._upload_id: str | None = None
        self._hashes: dict[int, bytes] = {}
        self._futures: list[Future[None]] = []
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    @property
    def parts_done(self) -> int:
        return len(self._hashes)

    def check(self) -> None:
        """Raise the first failure of a part sent earlier, so the writer learns early."""
        if self._failure is not None:
            raise self._failure

    def fail(self, error: BaseException) -> None:
        """Remember a failure met outside the part threads: bytes are lost, so
        the archive must never be completed."""
        with self._lock:
            if self._failure is None:
                self._failure = error

    def add(self, offset: int, part: bytes | bytearray) -> None:
        self.check()
        if self._upload_id is None:
            if self._trail:
                self._trail.starting()
            self._upload_id = self.glacier.initiate_multipart(self.vault, self.part_size, self.description)
            log.debug("multipart upload %s started in %s", self._upload_id, self.vault)
            if self._trail:
                self._trail.started(self._upload_id)
        self._send(offset, part)

    def _send(self, offset: int, part: bytes | bytearray) -> None:
        self._slots.acquire()  # back-pressure: the writer waits here
        try:
            future = self._executor.submit(self._upload_part, offset, part)
        except BaseException:
            self._slots.release()
            raise
        self._futures.append(future)

    def _upload_part(self, offset: int, part: bytes | bytearray) -> None:
        try:
            if self._failure is not None:
                return
            hashes = part_hashes(part)
            assert self._upload_id is not None
            try:
                self.glacier.upload_part(self.vault, self._upload_id, offset, part, hashes)
            except errors.NotFound as error:
                raise _lost(self._upload_id, error) from error
            with self._lock:
                self._hashes[offset] = bytes.fromhex(hashes[1])
            if self._tee is not None:
                self._tee(offset, part)
        except BaseException as error:  # noqa: BLE001 - handed to the writer thread
            with self._lock:
                if self._failure is None:
                    self._failure = error
        finally:
            self.buffers.give_back(part)
            self._slots.release()

    def wait(self) -> None:
        """Wait for every part sent so far (fsync); raise the first failure."""
        for future in self._futures:
            future.result()
        self._futures.clear()
        self.check()

    def finish(self, tail_offset: int, tail: bytes | bytearray) -> Stored | None:
        """Send what is left and complete. None for a file of 0 bytes."""
        try:
            self.check()
            size = tail_offset + len(tail)
            if self._upload_id is None:  # shorter than one part: a single request
                if not tail:
                    return None
                archive = self.glacier.upload_archive(self.vault, tail, self.description, part_hashes(tail))
                if self._tee is not None:
                    self._tee(0, tail)
                return Stored(archive, size)
            if tail:
                self._send(tail_offset, tail)
            self.wait()
            tree = combine([self._hashes[offset] for offset in sorted(self._hashes)]).hex()
            try:
                archive = self.glacier.complete_multipart(self.vault, self._upload_id, size, tree)
            except errors.NotFound as error:
                raise _lost(self._upload_id, error) from error
            self._ended()
            return Stored(archive, size)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Give up: stop sending, and abort the multipart upload so nothing lingers."""
        if self._failure is None:
            self._failure = errors.GlacierFSError("upload aborted")
        for future in self._futures:
            future.exception()  # wait, so no part arrives after the abort
        self._futures = []
        if self._upload_id is not None:
            try:
                self.glacier.abort_multipart(self.vault, self._upload_id)
                log.info("aborted multipart upload %s in %s", self._upload_id, self.vault)
            except errors.NotFound:
                pass
            except errors.GlacierFSError as error:
                log.error(
                    "could not abort multipart upload %s in %s (it lingers until Glacier expires it after 24 h): %s",
                    self._upload_id,
                    self.vault,
                    error,
                )
                return
            self._ended()

    def _ended(self) -> None:
        if self._trail and self._upload_id:
            self._trail.ended(self._upload_id)


def _lost(upload_id: str, error: errors.NotFound) -> errors.GlacierFSError:
    """Glacier no longer knows a multipart upload (aborted by another client or
    mount): the file was not stored, which is EIO, not ENOENT."""
    return errors.GlacierFSError(f"Glacier no longer knows multipart upload {upload_id[:16]}: {error}")


class Writer:
    """One file being written: partitioner + uploader, with the part limit enforced."""

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader
        self.partitioner = Partitioner(uploader.part_size, uploader.buffers)
        self.max_size = uploader.part_size * MAX_PARTS
        self.closed = False

    @property
    def size(self) -> int:
        return self.partitioner.size

    @property
    def upload_id(self) -> str | None:
        return self.uploader.upload_id

    @property
    def parts_done(self) -> int:
        return self.uploader.parts_done

    def _check_limit(self, end: int) -> None:
        if end > self.max_size:
            self.uploader.abort()
            self.closed = True
            raise errors.FileTooLarge(
                f"{end} bytes is past the largest file {self.max_size} that 10,000 parts of "
                f"{self.uploader.part_size} bytes allow; remount with a larger --part-size"
            )

    def _ensure_open(self) -> None:
        if self.closed:
            raise errors.GlacierFSError("this file's upload has already ended")

    def _send(self, parts: Iterator[tuple[int, bytearray]]) -> None:
        try:
            for part in parts:
                self.uploader.add(*part)
        except errors.NotSequential:
            raise  # refused before anything changed: the file is still whole
        except BaseException as error:
            self.uploader.fail(error)  # a part may be lost: close() must fail
            raise

    def write(self, offset: int, data: Buffer) -> int:
        self._ensure_open()
        self._check_limit(offset + len(data))
        self.uploader.check()
        self._send(self.partitioner.write(offset, data))
        return len(data)

    def truncate(self, length: int) -> None:
        self._ensure_open()
        if length >= self.size:
            self._check_limit(length)
            self._send(self.partitioner.extend(length))
        else:
            self.partitioner.shrink(length)

    def sync(self) -> None:
        self._ensure_open()
        self.uploader.wait()

    def close(self) -> Stored | None:
        """Complete the archive; raise if it did not reach Glacier."""
        self._ensure_open()
        self.closed = True
        return self.uploader.finish(*self.partitioner.tail())

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.uploader.abort()


def steady_heap() -> None:
    """Pin glibc's mmap threshold at 1 MiB. Part buffers are allocated and freed
    all the time; with the default dynamic threshold, freed ones are recycled on
    the heap, which fragments and lets RSS creep past the Writer's bound."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass
