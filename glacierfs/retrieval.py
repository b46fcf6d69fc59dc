"""Retrieval jobs: start one or reuse one, follow it, and download its output
in verified, tree-hash aligned chunks into the cache.

Jobs cost money, so every path here tries not to start one: the cache first,
then a job the catalog remembers (it survives a remount), then one Glacier
lists for the archive (started by another client). Concurrent readers of one
archive share one job under a per-archive lock.

Lock order: an archive's request lock, then ``self._state`` (a Condition).
No request to Glacier is made while holding ``self._state``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from glacierfs import errors
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
from glacierfs.glacier import GlacierClient, Job
from glacierfs.periodic import Periodic
from glacierfs.treehash import MiB, combine, tree_hash_bytes

log = logging.getLogger(__name__)

TIERS = ("Expedited", "Standard", "Bulk")
# How long each tier usually takes, for log lines and status.
EXPECTED = {"Expedited": "1-5 minutes", "Standard": "3-5 hours", "Bulk": "5-12 hours"}
# Poll about ten times per usual wait, never more than once a minute for real tiers.
DEFAULT_POLL = {"Expedited": 60.0, "Standard": 900.0, "Bulk": 1800.0}
NO_SPACE = "no space left in the cache directory"
MAX_DOWNLOADS = 3  # attempts to download one job's output before it is Unverified
CHUNK_ATTEMPTS = 2  # a chunk that fails its tree hash is fetched once more


@dataclass(frozen=True)
class Target:
    """Bytes of one archive to retrieve: the whole of it, or one aligned block."""

    vault: str
    archive_id: str
    archive_size: int
    archive_tree_hash: str | None
    start: int | None = None  # None: the whole archive
    end: int | None = None  # inclusive

    @property
    def first(self) -> int:
        return self.start or 0

    @property
    def last(self) -> int:
        return self.archive_size - 1 if self.end is None else self.end

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def whole(self) -> bool:
        return self.start is None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Retriever:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        cache: ContentCache,
        tier: str = "Standard",
        poll_interval: float | None = None,
        max_bytes: int = 10 << 30,
        max_jobs: int = 50,
        chunk_size: int = 16 * MiB,
        concurrency: int = 4,
        range_size: int = 64 * MiB,
        ranged_threshold: int = 1 << 30,
    ) -> None:
        if tier not in TIERS:
            raise errors.InvalidRequest(f"tier {tier!r} is not one of {', '.join(TIERS)}")
        for name, value in (("chunk size", chunk_size), ("range size", range_size)):
            if value < MiB or value & (value - 1):
                raise errors.InvalidRequest(f"{name} {value} is not 1 MiB x 2^n")
        self.glacier = glacier
        self.catalog = catalog
        self.cache = cache
        self.tier = tier
        self.poll_interval = poll_interval if poll_interval is not None else DEFAULT_POLL[tier]
        self.max_bytes = max_bytes
        self.max_jobs = max_jobs
        self.chunk_size = chunk_size
        self.range_size = range_size
        self.ranged_threshold = ranged_threshold
        self._chunks = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="download")
        self._jobs = ThreadPoolExecutor(max_workers=2, thread_name_prefix="job")
        self._downloading: set[str] = set()
        self._request_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._state = threading.Condition()
        self._poller = Periodic("poller", self.poll_interval, self.poll_once)

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()
        self._jobs.shutdown(wait=True)
        self._chunks.shutdown(wait=True)

    # What to retrieve ---------------------------------------------------------

    def is_ranged(self, archive_size: int) -> bool:
        return archive_size > self.ranged_threshold

    def whole(self, vault: str, archive_id: str, size: int, tree_hash: str | None) -> Target:
        return Target(vault, archive_id, size, tree_hash)

    def block(self, vault: str, archive_id: str, size: int, tree_hash: str | None, offset: int) -> Target:
        """The aligned block holding ``offset``: a node of the tree, so Glacier hashes it."""
        start = offset - offset % self.range_size
        return Target(vault, archive_id, size, tree_hash, start, min(start + self.range_size, size) - 1)

    def open_cached(self, target: Target) -> BinaryIO | None:
        return self.cache.open(target.archive_id, target.start)

    def is_cached(self, target: Target) -> bool:
        return self.cache.has(target.archive_id, target.start)

    # Starting jobs ------------------------------------------------------------

    def request(self, target: Target, explicit: bool = False, tier: str | None = None) -> JobRecord | None:
        """Make sure a job is under way for ``target``; None if it is cached already.

        ``explicit`` requests (glacierfs retrieve) were confirmed by the user and
        pass the cost guard; those from open() do not.
        """
        tier = tier or self.tier
        with self._request_locks[target.archive_id]:
            if self.is_cached(target):
                return None
            job = self._known_job(target)
            if job is None:
                job = self._job_listed_by_glacier(target)
            if job is None:
                if not explicit:
                    self._check_budget(target)
                job_id = self.glacier.initiate_archive_retrieval(
                    target.vault,
                    target.archive_id,
                    tier=tier,
                    byte_range=None if target.whole else (target.first, target.last),
                )
                job = JobRecord(job_id, target.vault, target.archive_id, target.first, target.last,
                                target.whole, tier, time.time(), IN_PROGRESS)
                self.catalog.put_job(job)
                log.info(
                    "requested retrieval job %s for archive %s bytes %d-%d (%s tier, usually %s)",
                    job_id[:16], target.archive_id[:16], target.first, target.last, tier, EXPECTED[tier],
                )
        self._poller.wake()
        return job

    def _covers(self, job: JobRecord, target: Target) -> bool:
        if target.whole:
            return job.whole
        return job.range_start <= target.first and job.range_end >= target.last and (
            job.whole or job.range_start == target.first
        )

    def _known_job(self, target: Target) -> JobRecord | None:
        """A job of ours still worth waiting for or downloading from."""
        fresh_after = time.time() - JOB_LIFETIME
        for job in reversed(self.catalog.jobs_for(target.archive_id)):
            if job.status in (IN_PROGRESS, SUCCEEDED) and self._covers(job, target):
                if job.status == SUCCEEDED and job.requested < fresh_after:
                    continue  # the output may have expired; the poller will tell
                if job.message.startswith(NO_SPACE):
                    self._poller.wake()  # perhaps there is room now
                    raise errors.CacheFull(
                        f"archive {target.archive_id[:16]} is retrieved (job {job.job_id[:16]}) but the "
                        f"cache directory is full: free space there, or lower --cache-size"
                    )
                return job
            if job.status == UNVERIFIED and self._covers(job, target):
                raise errors.RetrievalFailed(
                    f"archive {target.archive_id[:16]}: the output of job {job.job_id[:16]} failed "
                    f"verification {job.downloads} times ({job.message}); nothing was served. "
                    "Request it again with `glacierfs retrieve`."
                )
        return None

    def _job_listed_by_glacier(self, target: Target) -> JobRecord | None:
        """Adopt a job another client (or an earlier mount) started for this archive."""
        for listed in self.glacier.list_jobs(target.vault):
            if listed.archive_id != target.archive_id or listed.status == "Failed":
                continue
            whole = listed.byte_range is None or listed.byte_range == (0, target.archive_size - 1)
            first, last = listed.byte_range or (0, target.archive_size - 1)
            job = JobRecord(
                listed.job_id, target.vault, target.archive_id, first, last, whole, listed.tier,
                _epoch(listed.created), SUCCEEDED if listed.completed else IN_PROGRESS,
            )
            if self._covers(job, target) and job.job_id not in {j.job_id for j in self.catalog.jobs_for(target.archive_id)}:
                self.catalog.put_job(job)
                log.info("reusing retrieval job %s for archive %s, found in Glacier's job list",
                         job.job_id[:16], target.archive_id[:16])
                return job
        return None

    def _check_budget(self, target: Target) -> None:
        recent = self.catalog.jobs_since(time.time() - 24 * 3600)
        used = sum(job.size for job in recent)
        if used + target.size > self.max_bytes:
            raise errors.RetrievalBudgetExceeded(
                f"retrieving {target.size} more bytes would pass --max-retrieval-bytes "
                f"({used} of {self.max_bytes} used in the last 24 h); raise it, or thaw on purpose "
                "with `glacierfs retrieve`"
            )
        if len(recent) >= self.max_jobs:
            raise errors.RetrievalBudgetExceeded(
                f"{len(recent)} retrieval jobs were started in the last 24 h, the most "
                "--max-retrieval-jobs allows; raise it, or thaw on purpose with `glacierfs retrieve`"
            )

    def budget_left(self) -> tuple[int, int]:
        """(bytes, jobs) that open() may still start in this rolling 24 h."""
        recent = self.catalog.jobs_since(time.time() - 24 * 3600)
        return max(0, self.max_bytes - sum(job.size for job in recent)), max(0, self.max_jobs - len(recent))

    # Waiting ------------------------------------------------------------------

    def wait(self, target: Target, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``target`` to be cached."""
        deadline = time.monotonic() + timeout
        with self._state:
            while not self.is_cached(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                job = self._known_job(target)  # raises once verification has failed for good
                if job is None and not self.is_cached(target):
                    return False
                self._state.wait(min(remaining, 1.0))
        return True

    def describe(self, archive_id: str, whole_only: bool = True) -> str:
        """user.glacier.state for a stored archive."""
        if self.cache.has(archive_id):
            return "cached"
        for job in reversed(self.catalog.jobs_for(archive_id)):
            if whole_only and not job.whole:
                continue
            if job.status in (IN_PROGRESS, SUCCEEDED):
                return f"retrieving job={job.job_id} tier={job.tier} requested={iso(job.requested)}"
            if job.status == UNVERIFIED:
                return f"failed: {job.message}"
            break
        return "stored"

    # Following jobs -----------------------------------------------------------

    def poll_once(self) -> None:
        active = self.catalog.jobs_with_status(IN_PROGRESS, SUCCEEDED)
        by_vault: defaultdict[str, list[JobRecord]] = defaultdict(list)
        for job in active:
            by_vault[job.vault].append(job)
        for vault, jobs in by_vault.items():
            try:
                completed = {listed.job_id: listed for listed in self.glacier.list_jobs(vault, completed=True)}
            except errors.GlacierFSError as error:
                log.warning("could not list the jobs of vault %s: %s", vault, error)
                continue
            for job in jobs:
                self._follow(job, completed.get(job.job_id))

    def _follow(self, job: JobRecord, listed: Job | None) -> None:
        if listed is None:
            if job.status == SUCCEEDED or time.time() - job.requested > 2 * JOB_LIFETIME:
                self._set(job.but(status=EXPIRED, message="Glacier no longer lists this job"))
                log.warning("retrieval job %s expired before its output was downloaded", job.job_id[:16])
            return
        if listed.status == "Failed":
            self._set(job.but(status=FAILED, message=listed.status_message or "failed"))
            log.error("Glacier failed retrieval job %s: %s", job.job_id[:16], listed.status_message)
            return
        if job.status == IN_PROGRESS:
            job = job.but(status=SUCCEEDED)
            self._set(job)
        with self._state:
            if job.job_id in self._downloading:
                return
            self._downloading.add(job.job_id)
        self._jobs.submit(self._download, job, listed)

    def _set(self, job: JobRecord) -> None:
        self.catalog.put_job(job)
        with self._state:
            self._state.notify_all()

    def _download(self, job: JobRecord, listed: Job) -> None:
        """Fetch the output in aligned chunks, verify each and the whole, then cache it."""
        scratch: Path | None = None
        try:
            scratch = self.cache.scratch_file(job.range_end - job.range_start + 1)
            expected = listed.archive_tree_hash if job.whole else listed.tree_hash
            hashes = self._fetch_chunks(job, scratch)
            whole = combine(hashes).hex()
            if expected and whole != expected:
                raise errors.ChecksumMismatch(f"the output hashes to {whole}, Glacier says {expected}")
            self.cache.adopt(job.archive_id, None if job.whole else job.range_start, scratch)
            self._set(job.but(status=CACHED, message=""))
            log.info("retrieved archive %s bytes %d-%d (job %s), verified and cached",
                     job.archive_id[:16], job.range_start, job.range_end, job.job_id[:16])
        except Exception as error:  # noqa: BLE001 - recorded on the job; readers learn of it
            if _disk_full(error):
                # Not the job's fault: keep it, and try again once there is room.
                self._set(job.but(message=f"{NO_SPACE}: {error}"))
            else:
                downloads = job.downloads + 1
                failed_for_good = downloads >= MAX_DOWNLOADS or isinstance(error, errors.ChecksumMismatch)
                self._set(job.but(status=UNVERIFIED if failed_for_good else SUCCEEDED,
                                  downloads=downloads, message=str(error)[:300]))
            log.error("download of job %s (archive %s) failed, nothing was cached: %s",
                      job.job_id[:16], job.archive_id[:16], error)
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        finally:
            with self._state:
                self._downloading.discard(job.job_id)
                self._state.notify_all()

    def _fetch_chunks(self, job: JobRecord, scratch: Path) -> list[bytes]:
        size = job.size
        fd = os.open(scratch, os.O_WRONLY)
        try:
            offsets = range(0, size, self.chunk_size)
            futures = [self._chunks.submit(self._fetch_chunk, job, fd, offset, min(offset + self.chunk_size, size))
                       for offset in offsets]
            return [future.result() for future in futures]
        finally:
            os.close(fd)

    def _fetch_chunk(self, job: JobRecord, fd: int, start: int, stop: int) -> bytes:
        problem = ""
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            output = self.glacier.get_job_output(job.vault, job.job_id, (start, stop - 1))
            digest = tree_hash_bytes(output.body)
            if len(output.body) != stop - start:
                problem = f"got {len(output.body)} bytes, asked for {stop - start}"
            elif output.tree_hash is not None and output.tree_hash != digest.hex():
                problem = f"tree hash {digest.hex()}, Glacier sent {output.tree_hash}"
            else:
                os.pwrite(fd, output.body, start)
                return digest
            log.warning("job %s bytes %d-%d failed verification (attempt %d): %s",
                        job.job_id[:16], start, stop - 1, attempt, problem)
        raise errors.ChecksumMismatch(f"bytes {start}-{stop - 1} of job {job.job_id[:16]}: {problem}")


def _disk_full(error: BaseException) -> bool:
    """ENOSPC from our own writes, or diskcache's SQLite saying the same."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


def _epoch(created: str) -> float:
    try:
        return datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return time.time()
