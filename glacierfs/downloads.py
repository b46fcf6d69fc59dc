"""Following retrieval jobs: poll Glacier until a job completes, then download
its output in tree-hash aligned chunks, verify every chunk and the whole, and
hand the verified file to the cache.

A download that fails for want of network, disk or permission is retried,
with growing pauses, for as long as the job's output lives; only bytes that
fail verification condemn a job (Unverified). Only the poller's one thread
starts downloads.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as all_done
from pathlib import Path

from glacierfs import errors, timestamps
from glacierfs.cache import ContentCache
from glacierfs.catalog import (
    CACHED,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    JOB_LIFETIME,
    SUCCEEDED,
    UNVERIFIED,
    Catalog,
    JobRecord,
)
from glacierfs.glacier import GlacierClient
from glacierfs.periodic import Periodic
from glacierfs.records import Job
from glacierfs.treehash import combine, tree_hash_bytes

log = logging.getLogger(__name__)

NO_SPACE = "no space left in the cache directory"
CHUNK_ATTEMPTS = 2  # a chunk that fails its tree hash is fetched once more
# Pauses between attempts to download a job's output after a failure that was
# not the bytes' fault: doubling from the first to the last, while the output lives.
FIRST_RETRY = 1.0
LAST_RETRY = 600.0


class JobEvents:
    """What readers waiting for a retrieval wait on: a count of changes to jobs
    and downloads, bumped under a condition."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self._changes = 0

    def seen(self) -> int:
        with self.condition:
            return self._changes

    def changed(self) -> None:
        with self.condition:
            self._changes += 1
            self.condition.notify_all()

    def wait_after(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` for a change after the one ``seen``."""
        with self.condition:
            if self._changes == seen:
                self.condition.wait(timeout)


class JobFollower:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        cache: ContentCache,
        events: JobEvents,
        poll_interval: float,
        concurrency: int,
        chunk_size: int,
    ) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.cache = cache
        self.events = events
        self.chunk_size = chunk_size
        self._chunks = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="download")
        self._jobs = ThreadPoolExecutor(max_workers=2, thread_name_prefix="job")
        self._downloading: set[str] = set()
        # Job id -> (downloads that failed in a row, not before this time).
        self._retries: dict[str, tuple[int, float]] = {}
        self._poller = Periodic("poller", poll_interval, self.poll_once)

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()
        self._jobs.shutdown(wait=True)
        self._chunks.shutdown(wait=True)

    def wake(self) -> None:
        """Poll now: a job was started or adopted."""
        self._poller.wake()

    def poll_once(self) -> None:
        active = self.catalog.jobs_with_status(IN_PROGRESS, SUCCEEDED)
        by_vault: defaultdict[str, list[str]] = defaultdict(list)
        for job in active:
            by_vault[job.vault].append(job.job_id)
        for vault, job_ids in by_vault.items():
            try:
                completed = {listed.job_id: listed for listed in self.glacier.list_jobs(vault, completed=True)}
            except errors.GlacierFSError as error:
                log.warning("could not list the jobs of vault %s: %s", vault, error)
                continue
            for job_id in job_ids:
                self._follow(job_id, completed.get(job_id))

    def _follow(self, job_id: str, listed: Job | None) -> None:
        # Only the poller's one thread starts downloads, so a job neither being
        # downloaded nor cached by now (read afresh: the round's list of active
        # jobs may be stale) cannot become either before this one starts.
        with self.events.condition:
            if job_id in self._downloading:
                return
        job = self.catalog.job(job_id)
        if job is None or job.status not in (IN_PROGRESS, SUCCEEDED):
            return
        if listed is None:
            if job.status == SUCCEEDED or time.time() - job.requested > 2 * JOB_LIFETIME:
                self.set(job.but(status=EXPIRED, message="Glacier no longer lists this job"))
                log.warning("retrieval job %s expired before its output was downloaded", job.job_id[:16])
            return
        if listed.status == "Failed":
            self.set(job.but(status=FAILED, message=listed.status_message or "failed"))
            log.error("Glacier failed retrieval job %s: %s", job.job_id[:16], listed.status_message)
            return
        if job.status == IN_PROGRESS or job.completed is None:
            completed = job_date(listed.completed_at) if listed.completed_at else time.time()
            job = job.but(status=SUCCEEDED, completed=completed)
            self.set(job)
        if time.time() < self._retries.get(job_id, (0, 0.0))[1]:
            return
        with self.events.condition:
            self._downloading.add(job_id)
        self._jobs.submit(self._download, job, listed)

    def wake_if_retry_due(self, job: JobRecord) -> None:
        """A reader asks for a job whose download failed: try again now if its pause is over."""
        retry = self._retries.get(job.job_id)
        if retry is not None and time.time() >= retry[1]:
            self._poller.wake()

    def set(self, job: JobRecord) -> None:
        """Record what became of a job, and wake whoever waits on jobs."""
        self.catalog.put_job(job)
        self.events.changed()

    def _download(self, job: JobRecord, listed: Job) -> None:
        """Fetch the output in aligned chunks, verify each and the whole, then cache it."""
        scratch: Path | None = None
        try:
            scratch = self.cache.scratch_file(job.size)
            expected = listed.archive_tree_hash if job.whole else listed.tree_hash
            whole = combine(self._fetch_chunks(job, scratch)).hex()
            if expected and whole != expected:
                raise errors.ChecksumMismatch(f"the output hashes to {whole}, Glacier says {expected}")
            self.cache.adopt(job.archive_id, None if job.whole else job.range_start, scratch, whole)
            scratch = None
            self._retries.pop(job.job_id, None)
            self.set(job.but(status=CACHED, message=""))
            log.info(
                "retrieved archive %s bytes %d-%d (job %s), verified and cached",
                job.archive_id[:16],
                job.range_start,
                job.range_end,
                job.job_id[:16],
            )
        except errors.ChecksumMismatch as error:
            self._retries.pop(job.job_id, None)
            self.set(job.but(status=UNVERIFIED, downloads=job.downloads + 1, message=str(error)[:300]))
            log.error(
                "the output of job %s (archive %s) failed verification: %s; nothing was cached or served, "
                "and `glacierfs retrieve` (or setfattr -n user.glacier.retrieve) starts a new job",
                job.job_id[:16],
                job.archive_id[:16],
                error,
            )
        except errors.NotFound as error:
            self._retries.pop(job.job_id, None)
            self.set(job.but(status=EXPIRED, message=f"Glacier no longer has its output: {error}"[:300]))
            log.warning(
                "the output of job %s (archive %s) is gone from Glacier: %s",
                job.job_id[:16],
                job.archive_id[:16],
                error,
            )
        except Exception as error:  # noqa: BLE001 - network, disk, permissions: not the bytes' fault
            self._retry_later(job, error)
        finally:
            if scratch is not None:
                self.cache.discard_scratch(scratch)
            with self.events.condition:
                self._downloading.discard(job.job_id)
            self.events.changed()

    def _retry_later(self, job: JobRecord, error: Exception) -> None:
        """Keep the job, and download again after a pause that doubles each time,
        while its output lives."""
        failures = self._retries.get(job.job_id, (0, 0.0))[0] + 1
        pause = min(FIRST_RETRY * 2 ** (failures - 1), LAST_RETRY)
        again = time.time() + pause
        if again >= job.output_expires:
            self._retries.pop(job.job_id, None)
            self.set(job.but(status=EXPIRED, message=f"its output expired before a download succeeded: {error}"[:300]))
            log.error(
                "download of job %s (archive %s) failed, and its output expires before another try: %s",
                job.job_id[:16],
                job.archive_id[:16],
                error,
            )
            return
        self._retries[job.job_id] = (failures, again)
        message = f"{NO_SPACE}: {error}" if _disk_full(error) else f"download failed: {error}"
        self.set(job.but(message=message[:300]))
        log.warning(
            "download of job %s (archive %s) failed, nothing was cached: %s; trying again in %.0f s "
            "(failure %d in a row), as long as its output lasts (until %s)",
            job.job_id[:16],
            job.archive_id[:16],
            error,
            pause,
            failures,
            timestamps.iso(job.output_expires),
        )

    def _fetch_chunks(self, job: JobRecord, scratch: Path) -> list[bytes]:
        size = job.size
        fd = os.open(scratch, os.O_WRONLY)
        try:
            offsets = range(0, size, self.chunk_size)
            futures = [
                self._chunks.submit(self._fetch_chunk, job, fd, offset, min(offset + self.chunk_size, size))
                for offset in offsets
            ]
            all_done(futures)  # every chunk done with ``fd`` before it is closed, failed or not
            return [future.result() for future in futures]
        finally:
            os.close(fd)

    def _fetch_chunk(self, job: JobRecord, fd: int, start: int, stop: int) -> bytes:
        return fetch_chunk(self.glacier, job.vault, job.job_id, start, stop, lambda body: os.pwrite(fd, body, start))


def fetch_chunk(
    glacier: GlacierClient, vault: str, job_id: str, start: int, stop: int, write: Callable[[bytes], object]
) -> bytes:
    """Bytes ``start``..``stop - 1`` of a job's output, checked (their length, and
    Glacier's tree hash of an aligned range) before ``write`` gets them; their
    tree hash. export.py shares it."""
    problem = ""
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        output = glacier.get_job_output(vault, job_id, (start, stop - 1))
        digest = tree_hash_bytes(output.body)
        if len(output.body) != stop - start:
            problem = f"got {len(output.body)} bytes, asked for {stop - start}"
        elif output.tree_hash is not None and output.tree_hash != digest.hex():
            problem = f"tree hash {digest.hex()}, Glacier sent {output.tree_hash}"
        else:
            write(output.body)
            return digest
        log.warning(
            "job %s bytes %d-%d failed verification (attempt %d): %s",
            job_id[:16],
            start,
            stop - 1,
            attempt,
            problem,
        )
    raise errors.ChecksumMismatch(f"bytes {start}-{stop - 1} of job {job_id[:16]}: {problem}")


def _disk_full(error: BaseException) -> bool:
    """ENOSPC from our own writes, the cache index's SQLite saying the same
    (NoSpace), or diskcache's own SQLite."""
    if isinstance(error, errors.NoSpace) or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


def job_date(created: str) -> float:
    """A job's date; one Glacier did not give (or garbled) counts as now."""
    return timestamps.parse_iso(created) or time.time()
