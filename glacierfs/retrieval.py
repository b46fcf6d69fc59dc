"""Retrieval: open an archive's verified bytes from the cache, or find or start
the job that will bring them, wait for it, or explain why not.

Jobs cost money, so every path here tries not to start one: the cache first,
then a job the catalog remembers (it survives a remount), then one Glacier
lists for the archive (started by another client). A job's output stays
downloadable for 24 h after it completes, so bytes the cache lost (evicted,
deleted, a new cache directory) are downloaded again from the same job, never
paid for twice. Concurrent readers of one archive share one job under a
per-archive lock; the cost guard's check and its spend are one step under
``self._budget``, so readers of different archives cannot all pass it at once.

Following jobs and downloading their output is downloads.py's job; an
explicit retrieve starts a new job even where the last one's output failed
verification.

Lock order: an archive's request lock, then ``self._budget``, then the job
events' condition. No request to Glacier is made while holding either of the
last two.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import BinaryIO

from glacierfs import errors, timestamps
from glacierfs.cache import ContentCache
from glacierfs.catalog import (
    CACHED,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    SUCCEEDED,
    UNVERIFIED,
    Catalog,
    Entry,
    JobRecord,
)
from glacierfs.downloads import NO_SPACE, JobEvents, JobFollower, job_date
from glacierfs.glacier import GlacierClient
from glacierfs.records import TIERS, Job
from glacierfs.spending import exports_started, spent
from glacierfs.treehash import MiB

log = logging.getLogger(__name__)

# How long each tier usually takes, for log lines and status.
EXPECTED = {"Expedited": "1-5 minutes", "Standard": "3-5 hours", "Bulk": "5-12 hours"}
# Poll about ten times per usual wait, never more than once a minute for real tiers.
DEFAULT_POLL = {"Expedited": 60.0, "Standard": 900.0, "Bulk": 1800.0}


def listed_span(listed: Job, archive_size: int) -> tuple[int, int, bool]:
    """(first, last, whole) of what a job in Glacier's list retrieves; export.py shares it."""
    first, last = listed.byte_range or (0, archive_size - 1)
    return first, last, (first, last) == (0, archive_size - 1)


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
        tier_fallback: bool = True,
    ) -> None:
        """``tier_fallback``: an Expedited job Glacier has no capacity for is
        started at Standard instead."""
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
        self.range_size = range_size
        self.ranged_threshold = ranged_threshold
        self.tier_fallback = tier_fallback
        self._request_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # Jobs being started: counted by the cost guard before Glacier has answered.
        self._budget = threading.Lock()
        self._reserved_bytes = 0
        self._reserved_jobs = 0
        self.events = JobEvents()
        self.follower = JobFollower(glacier, catalog, cache, self.events, self.poll_interval, concurrency, chunk_size)

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def poll_once(self) -> None:
        self.follower.poll_once()

    # What to retrieve ---------------------------------------------------------

    def is_ranged(self, archive_size: int) -> bool:
        return archive_size > self.ranged_threshold

    def whole(self, vault: str, archive_id: str, size: int, tree_hash: str | None) -> Target:
        return Target(vault, archive_id, size, tree_hash)

    def block(self, vault: str, archive_id: str, size: int, tree_hash: str | None, offset: int) -> Target:
        """The aligned block holding ``offset``: a node of the tree, so Glacier hashes it."""
        start = offset - offset % self.range_size
        return Target(vault, archive_id, size, tree_hash, start, min(start + self.range_size, size) - 1)

    def target(self, entry: Entry, offset: int | None = None) -> Target:
        """A stored file's whole archive, or the block of it holding ``offset``."""
        if entry.archive_id is None:
            raise errors.Busy(f"{entry.vault}/{entry.path} is not stored in Glacier yet")
        if offset is None:
            return self.whole(entry.vault, entry.archive_id, entry.size, entry.tree_hash)
        return self.block(entry.vault, entry.archive_id, entry.size, entry.tree_hash, offset)

    def open_cached(self, target: Target) -> BinaryIO | None:
        """The cached bytes of ``target``, checked by the cache to be the ones verified."""
        return self.cache.open(target.archive_id, target.start, target.archive_tree_hash if target.whole else None)

    def is_cached(self, target: Target) -> bool:
        return self.cache.has(target.archive_id, target.start, target.archive_tree_hash if target.whole else None)

    # Reading ------------------------------------------------------------------

    def fetch(self, target: Target, label: str, wait_seconds: float) -> BinaryIO:
        """The cached bytes of ``target``; else a job is found or started for them
        (which the cost guard may refuse, or a failed verification), waited for
        up to ``wait_seconds``, and JobNotReady names it. ``label`` names the
        file in that message."""
        cached, job = self._cached_or_job(target, explicit=False, tier=None)
        if cached is not None:
            return cached
        if wait_seconds and self.wait(target, wait_seconds):
            # Cached meanwhile; should the file be gone again already, ask once more.
            cached, job = self._cached_or_job(target, explicit=False, tier=None)
            if cached is not None:
                return cached
        assert job is not None
        job = self.catalog.job(job.job_id) or job  # what happened to it while we waited
        detail = ""
        if job.message and job.status == SUCCEEDED:
            detail = f"; its last download failed ({job.message}), and is retried while its output lasts"
        raise errors.JobNotReady(
            f"{label}: bytes {target.first}-{target.last} are being retrieved by job {job.job_id} "
            f"({job.tier} tier, requested {timestamps.iso(job.requested)}, usually {EXPECTED[job.tier]}){detail}; "
            "try again later"
        )

    # Starting jobs ------------------------------------------------------------

    def request(self, target: Target, explicit: bool = False, tier: str | None = None) -> JobRecord | None:
        """Make sure a job is under way for ``target``; None if it is cached already.

        ``explicit`` requests (glacierfs retrieve) were confirmed by the user: they
        pass the cost guard, and start a new job where the last one's output
        failed verification; those from open() do neither.
        """
        if tier is not None and tier not in TIERS:
            raise errors.InvalidRequest(f"{tier!r} is not a tier: {', '.join(TIERS)}")
        cached, job = self._cached_or_job(target, explicit, tier)
        if cached is not None:
            cached.close()
        return job

    def _cached_or_job(
        self, target: Target, explicit: bool, tier: str | None
    ) -> tuple[BinaryIO, None] | tuple[None, JobRecord]:
        """The cached bytes, or else the job that brings them: always one of the two."""
        with self._request_locks[target.archive_id]:
            cached = self.open_cached(target)
            if cached is not None:
                return cached, None
            job = self._known_job(target, explicit) or self._job_listed_by_glacier(target)
            if job is None:
                job = self._start_job(target, tier or self.tier, explicit)
        return None, job

    def _start_job(self, target: Target, tier: str, explicit: bool) -> JobRecord:
        # The check and the spend are one step: a reservation, until the catalog has the job.
        with self._budget:
            if not explicit:
                self._check_budget(target)
            self._reserved_bytes += target.size
            self._reserved_jobs += 1
        try:
            job_id, tier = self._initiate(target, tier)
            job = JobRecord(
                job_id,
                target.vault,
                target.archive_id,
                target.first,
                target.last,
                target.whole,
                tier,
                time.time(),
                IN_PROGRESS,
            )
            self.catalog.put_job(job)
        finally:
            with self._budget:
                self._reserved_bytes -= target.size
                self._reserved_jobs -= 1
        log.info(
            "requested retrieval job %s for archive %s bytes %d-%d (%s tier, usually %s)",
            job_id[:16],
            target.archive_id[:16],
            target.first,
            target.last,
            tier,
            EXPECTED[tier],
        )
        self.follower.wake()
        return job

    def _initiate(self, target: Target, tier: str) -> tuple[str, str]:
        """InitiateJob: the job's id and the tier it runs at. Refusals by the
        account's retrieval policy are told apart from the cost guard's."""
        try:
            try:
                return self._initiate_at(target, tier), tier
            except errors.InsufficientCapacity as error:
                if tier != "Expedited" or not self.tier_fallback:
                    raise errors.InsufficientCapacity(
                        f"Glacier has no {tier} capacity for archive {target.archive_id[:16]} right now and "
                        f"--no-tier-fallback keeps it from the Standard tier: try again later, or buy a "
                        f"provisioned capacity unit ({error})"
                    ) from error
                log.warning(
                    "Glacier has no Expedited capacity for archive %s (%s): retrieving it at the Standard tier "
                    "instead, usually %s (--no-tier-fallback refuses instead)",
                    target.archive_id[:16],
                    error,
                    EXPECTED["Standard"],
                )
            return self._initiate_at(target, "Standard"), "Standard"
        except errors.RetrievalPolicyRefused as error:
            raise errors.RetrievalPolicyRefused(
                f"the account's data retrieval policy ({self._policy_summary()}) refused retrieving bytes "
                f"{target.first}-{target.last} of archive {target.archive_id[:16]}. It is Glacier's own setting "
                "for the account, not glacierfs's cost guard (--max-retrieval-bytes): wait, or change it "
                f"(aws glacier set-data-retrieval-policy) ({error})"
            ) from error

    def _initiate_at(self, target: Target, tier: str) -> str:
        return self.glacier.initiate_archive_retrieval(
            target.vault,
            target.archive_id,
            tier=tier,
            byte_range=None if target.whole else (target.first, target.last),
        )

    def _policy_summary(self) -> str:
        try:
            return self.glacier.get_data_retrieval_policy().summary
        except errors.GlacierFSError as error:
            return f"unknown: {error}"

    def _covers(self, job: JobRecord, target: Target) -> bool:
        if target.whole:
            return job.whole
        return (
            job.range_start <= target.first
            and job.range_end >= target.last
            and (job.whole or job.range_start == target.first)
        )

    @staticmethod
    def _fills(job: JobRecord, target: Target) -> bool:
        """The job's output is exactly what the cache keeps for ``target``."""
        return job.whole == target.whole and (job.whole or job.range_start == target.first)

    def _known_job(self, target: Target, explicit: bool = False) -> JobRecord | None:
        """A job of ours still worth waiting for or downloading from (again)."""
        now = time.time()
        for job in reversed(self.catalog.jobs_for(target.archive_id)):
            if not self._covers(job, target):
                continue
            if job.status == IN_PROGRESS:
                return job  # the poller gives up on it if Glacier stops listing it
            if job.status in (SUCCEEDED, CACHED) and job.output_expires > now:
                if job.status == CACHED:
                    if not self._fills(job, target):
                        continue
                    # The cache lost what this job brought; its output is still there.
                    job = job.but(status=SUCCEEDED, message="")
                    self.follower.set(job)
                    log.info(
                        "archive %s bytes %d-%d are no longer in the cache: downloading them again from "
                        "job %s, whose output lasts until %s (no new job)",
                        target.archive_id[:16],
                        target.first,
                        target.last,
                        job.job_id[:16],
                        timestamps.iso(job.output_expires),
                    )
                    self.follower.wake()
                    return job
                self.follower.wake_if_retry_due(job)
                if job.message.startswith(NO_SPACE) and not explicit:
                    raise errors.CacheFull(
                        f"archive {target.archive_id[:16]} is retrieved (job {job.job_id[:16]}) but the "
                        f"cache directory is full: free space there, or lower --cache-size"
                    )
                return job
            if job.status == UNVERIFIED and not explicit:
                raise errors.RetrievalFailed(
                    f"archive {target.archive_id[:16]}: the output of job {job.job_id[:16]} failed "
                    f"verification ({job.message}); nothing was served. "
                    "Request it again with `glacierfs retrieve` (or setfattr -n user.glacier.retrieve)."
                )
        return None

    def _job_listed_by_glacier(self, target: Target) -> JobRecord | None:
        """Adopt a job another client (or an earlier mount) started for this
        archive, or one of ours Glacier still lists although we counted it gone."""
        ours = {job.job_id: job for job in self.catalog.jobs_for(target.archive_id)}
        for listed in self.glacier.list_jobs(target.vault):
            if listed.archive_id != target.archive_id or listed.status == "Failed":
                continue
            first, last, whole = listed_span(listed, target.archive_size)
            job = JobRecord(
                listed.job_id,
                target.vault,
                target.archive_id,
                first,
                last,
                whole,
                listed.tier,
                job_date(listed.created),
                SUCCEEDED if listed.completed else IN_PROGRESS,
                completed=job_date(listed.completed_at) if listed.completed_at else None,
            )
            if not self._covers(job, target):
                continue
            known = ours.get(job.job_id)
            if known is not None:
                if known.status in (FAILED, EXPIRED, UNVERIFIED) or not self._fills(known, target):
                    continue
                job = known.but(status=job.status, completed=job.completed, message="")
            self.follower.set(job)
            log.info(
                "reusing retrieval job %s for archive %s, found in Glacier's job list",
                job.job_id[:16],
                target.archive_id[:16],
            )
            self.follower.wake()
            return job
        return None

    def _spent_today(self) -> list[tuple[float, int]]:
        """(when, bytes) of the account's jobs in the last 24 h: the mount's and its exports' (spending.py)."""
        since = time.time() - 24 * 3600
        own = [(job.job_id, job.requested, job.size) for job in self.catalog.jobs_since(since)]
        return spent(own, exports_started(self.catalog.path, since))

    def _check_budget(self, target: Target) -> None:
        """Under self._budget: jobs being started count as started."""
        recent = self._spent_today()
        used = sum(size for _, size in recent) + self._reserved_bytes
        started = len(recent) + self._reserved_jobs
        if used + target.size > self.max_bytes:
            raise errors.RetrievalBudgetExceeded(
                f"retrieving {target.size} more bytes would pass --max-retrieval-bytes "
                f"({used} of {self.max_bytes} used in the last 24 h); raise it, or thaw on purpose "
                "with `glacierfs retrieve`"
            )
        if started >= self.max_jobs:
            raise errors.RetrievalBudgetExceeded(
                f"{started} retrieval jobs were started in the last 24 h, the most "
                "--max-retrieval-jobs allows; raise it, or thaw on purpose with `glacierfs retrieve`"
            )

    def budget_left(self) -> tuple[int, int]:
        """(bytes, jobs) that open() may still start in this rolling 24 h."""
        recent = self._spent_today()
        with self._budget:
            used = sum(size for _, size in recent) + self._reserved_bytes
            started = len(recent) + self._reserved_jobs
        return max(0, self.max_bytes - used), max(0, self.max_jobs - started)

    # Waiting ------------------------------------------------------------------

    def wait(self, target: Target, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``target`` to be cached."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.events.seen()
            # Under the archive's lock, as in request(): a download that ends
            # between the look at the cache and the look at the job is no loss
            # of the cache, and must not send the job to be downloaded again.
            with self._request_locks[target.archive_id]:
                cached = self.open_cached(target)
                if cached is not None:
                    cached.close()
                    return True
                if self._known_job(target) is None:  # raises once verification has failed
                    return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.events.wait_after(seen, min(remaining, 1.0))

    def last_whole_job(self, archive_id: str) -> JobRecord | None:
        """The newest job for the whole archive: what user.glacier.state reports."""
        return next((job for job in reversed(self.catalog.jobs_for(archive_id)) if job.whole), None)

    def is_cached_archive(self, archive_id: str) -> bool:
        return self.cache.has(archive_id)

    def status(self) -> dict[str, object]:
        """Jobs in flight, the cache and the cost guard's budget, for `glacierfs status`."""
        used, entries = self.cache.usage()
        bytes_left, jobs_left = self.budget_left()
        return {
            "jobs": [
                {
                    "job_id": job.job_id,
                    "vault": job.vault,
                    "archive_id": job.archive_id,
                    "tier": job.tier,
                    "bytes": job.size,
                    "requested": job.requested,
                    "status": job.status,
                }
                for job in self.catalog.jobs_with_status(IN_PROGRESS, SUCCEEDED)
            ],
            "cache": {"bytes": used, "entries": entries, "limit": self.cache.size_limit},
            "budget": {
                "bytes_left": bytes_left,
                "jobs_left": jobs_left,
                "max_bytes": self.max_bytes,
                "max_jobs": self.max_jobs,
            },
        }
