"""The export engine: every archive under SOURCE brought to DEST by one job,
verified against its tree hash, then written under its name.

Jobs cost money, so a job is started for an archive only when Glacier lists
no job for it whose output still lives: one this export recorded, one the
mount's catalog knows, or one another client started (Glacier's ListJobs is
what decides, as in retrieval.py). A recorded job Glacier no longer lists has
expired, and only then is a new one started, with a log line saying so. New
jobs wait for the pacer. Outputs are downloaded in tree-hash aligned chunks
straight to a temporary file at DEST, a few archives at once, so memory stays
at ``concurrency * chunk_size`` whatever the archives' sizes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from glacierfs import errors
from glacierfs.downloads import fetch_chunk
from glacierfs.exportstate import (
    FAILED,
    REQUESTED,
    VERIFIED,
    WRITTEN,
    ExportState,
    Item,
    MountCatalog,
)
from glacierfs.glacier import GlacierClient
from glacierfs.localdest import ABSENT, SAME
from glacierfs.pacing import Pacer
from glacierfs.records import Job
from glacierfs.retrieval import listed_span
from glacierfs.treehash import MiB, combine, tree_aligned

log = logging.getLogger(__name__)

JobList = dict[tuple[str, int, int], list[Job]]  # (archive id, first, last byte) -> its jobs Glacier lists

START_CONCURRENCY = 8  # InitiateJob requests in flight at once
# Jobs started in the first round; each later round starts as many as were
# started so far. Every round ends with a new look at Glacier's job list, which
# downloads what finished while the next batch starts, and costs a request per
# 50 jobs listed: batches that double keep the listings O(archives), not
# O(archives^2) as a fixed batch does.
START_BATCH = 100
# Archives over this come in ranged jobs of RANGE_SIZE (export's --ranged-threshold, --range-size).
RANGED_THRESHOLD = 4 << 30
RANGE_SIZE = 1 << 30
# Verified archives waiting to be named, per download slot.
COMMITS_PER_DOWNLOAD = 2
# Refusals of a job that mean "not now": the account's data retrieval policy
# (PolicyEnforcedException) and a lack of Expedited capacity.
NOT_NOW = (errors.RetrievalPolicyRefused, errors.InsufficientCapacity)


class Sink(Protocol):
    """One archive on its way to the destination: nothing shows under its name before commit()."""

    def write(self, data: bytes, offset: int) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def keep(self) -> None: ...


class Destination(Protocol):
    """A local directory (localdest.py) or an S3 prefix (s3dest.py)."""

    label: str

    def compare(self, rel: str, item: Item) -> str: ...
    def still_there(self, rel: str, item: Item) -> bool: ...
    def make_dir(self, rel: str) -> None: ...
    def set_dir_times(self, rel: str, item: Item) -> None: ...
    def begin(self, rel: str, item: Item, resume: bool = False) -> Sink: ...
    def partial_tree_hash(self, rel: str, first: int, last: int) -> str | None: ...
    def empty_file(self, rel: str, item: Item) -> None: ...


class Assembly:
    """A large archive brought out in ranges, one job each, downloaded at once
    into one sink: each range is verified against its own tree hash as it
    lands, and the whole (the ranges' hashes combined: they are nodes of the
    archive's tree) before the sink is committed."""

    def __init__(self, item: Item, rel: str, ranges: int) -> None:
        self.item, self.rel = item, rel
        self.pending = ranges  # ranges not yet verified or failed
        self.hashes: dict[int, bytes] = {}  # first byte -> tree hash, of the ranges verified
        self.failed = False
        self.sink: Sink | None = None
        self.lock = threading.Lock()

    def open(self, dest: Destination) -> Sink:
        with self.lock:
            if self.sink is None:
                self.sink = dest.begin(self.rel, self.item, resume=True)
            return self.sink


@dataclass(eq=False)
class Work:
    """An archive still to bring out, or one range of a large one."""

    item: Item
    rel: str  # its path under DEST
    job_id: str | None = None  # the job this export counts on
    listed: Job | None = None  # that job as Glacier last listed it
    span: tuple[int, int] | None = None  # a range's first and last byte; None: the whole archive
    assembly: Assembly | None = None  # where a range's bytes go

    @property
    def first(self) -> int:
        return self.span[0] if self.span else 0

    @property
    def last(self) -> int:
        return self.span[1] if self.span else self.item.size - 1

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def what(self) -> str:
        return f"{self.rel} bytes {self.first}-{self.last}" if self.span else self.rel


@dataclass
class Totals:
    files: int = 0
    files_done: int = 0
    bytes: int = 0
    bytes_done: int = 0
    waiting: int = 0  # archives whose job is in progress
    downloading: int = 0
    paced: int = 0  # archives waiting for the pacer
    new_jobs: int = 0
    reused_jobs: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # path -> why
    started: float = field(default_factory=time.monotonic)
    bytes_at_start: int = 0  # done before this run: not part of its rate

    def eta(self) -> float | None:
        """Seconds left at this run's rate so far; None before there is one."""
        elapsed = time.monotonic() - self.started
        rate = (self.bytes_done - self.bytes_at_start) / elapsed if elapsed > 0 else 0
        left = self.bytes - self.bytes_done
        return left / rate if rate > 0 else (0.0 if not left else None)

    def figures(self) -> dict[str, Any]:
        """What `glacierfs status` shows of a running export."""
        return {
            "files": self.files,
            "files_done": self.files_done,
            "bytes": self.bytes,
            "bytes_done": self.bytes_done,
            "jobs_waiting": self.waiting,
            "downloading": self.downloading,
            "paced": self.paced,
            "new_jobs": self.new_jobs,
            "reused_jobs": self.reused_jobs,
            "failed": len(self.failures),
            "eta": self.eta(),
        }


class StopExport(Exception):
    """The destination is full (or the run was told not to wait): stop cleanly, resume later."""


class Exporter:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: MountCatalog,
        state: ExportState,
        dest: Destination,
        tier: str,
        pacer: Pacer,
        poll_interval: float,
        concurrency: int = 4,
        chunk_size: int = 16 * MiB,
        overwrite: bool = False,
        progress: Callable[[Totals], None] | None = None,
        ranged_threshold: int = RANGED_THRESHOLD,
        range_size: int = RANGE_SIZE,
    ) -> None:
        """Archives over ``ranged_threshold`` bytes come in ranges of ``range_size``, one job each."""
        for name, value in (("chunk size", chunk_size), ("range size", range_size)):
            if not tree_aligned(value):
                raise errors.InvalidRequest(f"{name} {value} is not 1 MiB x 2^n")
        if range_size < chunk_size:
            raise errors.InvalidRequest(f"the range size ({range_size}) is smaller than the chunk size ({chunk_size})")
        self.glacier = glacier
        self.catalog = catalog
        self.state = state
        self.dest = dest
        self.tier = tier
        self.pacer = pacer
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.overwrite = overwrite
        self.ranged_threshold = ranged_threshold
        self.range_size = range_size
        self.progress = progress or (lambda totals: None)
        self.totals = Totals()
        self._lock = threading.Lock()  # guards totals, updated by download and start threads
        self._starter: ThreadPoolExecutor | None = None  # while run() runs
        self._committer: ThreadPoolExecutor | None = None  # while run() runs
        self._commit_slots = threading.BoundedSemaphore(COMMITS_PER_DOWNLOAD * concurrency)

    # Planning -------------------------------------------------------------

    def plan(self, vault: str, prefix: str) -> tuple[list[Work], list[tuple[str, Item]]]:
        """The archives still to export, and the directories and empty files
        (done at once: they need no job). Finished ones are counted done."""
        work: list[Work] = []
        local: list[tuple[str, Item]] = []
        for item in self.catalog.items(vault, prefix):
            rel = item.path[len(prefix) + 1 :] if prefix else item.path
            if item.is_dir or item.is_empty_file:
                local.append((rel, item))
                continue
            self.totals.files += 1
            self.totals.bytes += item.size
            if not item.archive_id:
                self._fail(rel, f"not stored in Glacier (state {item.state})")
                continue
            row = self.state.row(self.dest.label, vault, item.path)
            if row is not None and row[0] != item.archive_id:
                row = None  # the path holds another archive since
            try:
                if row is not None and row[1] == WRITTEN and self.dest.still_there(rel, item):
                    self._done(item.size)
                    continue
                found = self.dest.compare(rel, item)
            except errors.NameTooLong as error:
                self._fail(rel, str(error))
                continue
            if found == SAME:
                self.state.set(self.dest.label, vault, item.path, item.archive_id, WRITTEN, None, "already there")
                self._done(item.size)
                continue
            if found != ABSENT and not self.overwrite:
                self._fail(rel, "exists at the destination with other content; left alone (--overwrite replaces it)")
                continue
            if item.size > self.ranged_threshold:
                work.extend(self._ranges(vault, item, rel))
            else:
                work.append(Work(item, rel, row[2] if row else None))
        return work, local

    def _ranges(self, vault: str, item: Item, rel: str) -> list[Work]:
        """A large archive's ranges: aligned (1 MiB x 2^n each, at multiples of
        that, so Glacier sends each one's tree hash), with the jobs an earlier
        run started. Ranges it verified are checked again against what it left
        at the destination, and skipped where they still match; the last range
        always comes again, so that this run commits the archive."""
        assert item.archive_id
        spans = [(first, min(first + self.range_size, item.size) - 1) for first in range(0, item.size, self.range_size)]
        assembly = Assembly(item, rel, len(spans))
        seen = self.state.ranges(self.dest.label, vault, item.path, item.archive_id)
        work: list[Work] = []
        for index, span in enumerate(spans):
            last, state, job_id, tree_hash = seen.get(span[0], (span[1], "", None, None))
            if last != span[1]:  # another range size then: start over
                last, state, job_id, tree_hash = span[1], "", None, None
            if (
                state == VERIFIED
                and tree_hash
                and index < len(spans) - 1
                and self.dest.partial_tree_hash(rel, *span) == tree_hash
            ):
                assembly.hashes[span[0]] = bytes.fromhex(tree_hash)
                assembly.pending -= 1
                log.info("%s bytes %d-%d: verified by an earlier run, still there", rel, *span)
                continue
            work.append(Work(item, rel, job_id, span=span, assembly=assembly))
        return work

    def write_local(self, local: list[tuple[str, Item]]) -> None:
        """Directories and empty files: no job, written at once."""
        for rel, item in local:
            try:
                found = self.dest.compare(rel, item)
            except errors.NameTooLong as error:
                self._fail(rel, str(error))
                continue
            if item.is_dir:
                if found in (SAME, ABSENT):
                    self.dest.make_dir(rel)
                else:
                    self._fail(rel, "a directory is wanted, and something else is at the destination")
                continue
            self.totals.files += 1
            if found in (SAME, ABSENT) or self.overwrite:
                self.dest.empty_file(rel, item)
                self.totals.files_done += 1
            else:
                self._fail(rel, "exists at the destination with other content; left alone (--overwrite replaces it)")

    def finish_dirs(self, local: list[tuple[str, Item]]) -> None:
        for rel, item in sorted(local, key=lambda pair: pair[0].count("/"), reverse=True):
            if item.is_dir and rel not in self.totals.failures:
                self.dest.set_dir_times(rel, item)

    # Jobs -----------------------------------------------------------------

    def jobs_listed(self, vault: str) -> JobList:
        """(Archive id, first byte, last byte) -> retrieval jobs Glacier lists
        for that span, output still live or coming."""
        listed: JobList = {}
        for job in self.glacier.list_jobs(vault):
            if job.action != "ArchiveRetrieval" or job.status == "Failed" or not job.archive_id:
                continue
            if job.archive_size is None:
                continue
            first, last, _ = listed_span(job, job.archive_size)
            listed.setdefault((job.archive_id, first, last), []).append(job)
        return listed

    def _pick(self, work: Work, listed: JobList) -> Job | None:
        """This export's job, else one the mount knows, else any Glacier lists; Succeeded first."""
        assert work.item.archive_id
        jobs = {job.job_id: job for job in listed.get((work.item.archive_id, work.first, work.last), [])}
        if work.job_id in jobs:
            return jobs[work.job_id]
        for known in reversed(self.catalog.live_jobs(work.item.archive_id)):
            if (known.range_start, known.range_end) == (work.first, work.last) and known.job_id in jobs:
                return jobs[known.job_id]
        ready = sorted(jobs.values(), key=lambda job: (not job.completed, job.created))
        return ready[0] if ready else None

    def _start(self, vault: str, work: Work) -> bool:
        """Start a job for ``work``; False if Glacier's policy or the pacer says not now."""
        item = work.item
        assert item.archive_id
        try:
            job_id = self.glacier.initiate_archive_retrieval(
                vault, item.archive_id, tier=self.tier, byte_range=work.span
            )
        except NOT_NOW as error:
            self.pacer.refused(str(error))
            return False
        except errors.NotFound as error:
            self._fail(work.rel, f"Glacier has no such archive: {error}")
            self.state.set(self.dest.label, vault, item.path, item.archive_id, FAILED, None, str(error))
            return True
        self.pacer.accepted()
        now = self.pacer.clock()
        self.state.add_job(job_id, vault, item.archive_id, self.tier, work.size, now)
        self._requested(vault, work, job_id)
        work.job_id = job_id
        with self._lock:
            self.totals.new_jobs += 1
        log.info("started %s job %s for %s (%d bytes)", self.tier, job_id[:16], work.what, work.size)
        return True

    def _requested(self, vault: str, work: Work, job_id: str) -> None:
        item = work.item
        assert item.archive_id
        if work.span is None:
            self.state.set(self.dest.label, vault, item.path, item.archive_id, REQUESTED, job_id)
        else:
            self.state.set_range(self.dest.label, vault, item.path, item.archive_id, work.span, REQUESTED, job_id)

    # The run --------------------------------------------------------------

    def run(self, vault: str, work: list[Work], wait_for_jobs: bool = True, listed: JobList | None = None) -> None:
        """Bring every archive of ``work`` out; raise StopExport when the disk
        is full, or, without ``wait_for_jobs``, once only waiting is left.

        Glacier's job list is asked only while some archive has no download
        under way: at the start (``listed``, if the caller just asked), right
        after jobs were started, and then every poll interval while jobs are in
        progress. Downloads finishing need no new list: asking for every one of
        them made the listing, O(jobs) requests each time, the export's pace.
        Finished downloads come back through a queue, not ``wait()`` over every
        download submitted (O(archives) each time)."""
        remaining = {id(w): w for w in work}
        running: dict[Future[Any], Work] = {}  # downloads, and the commits they led to
        committing: set[Future[Any]] = set()
        finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        next_listing = 0.0  # monotonic time of the next look at Glacier's job list
        waiting = paced = 0
        with (
            # Outermost, so that downloads still finishing at the end can hand over their commits.
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="commit") as self._committer,
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="export") as pool,
            ThreadPoolExecutor(max_workers=START_CONCURRENCY, thread_name_prefix="start") as self._starter,
        ):

            def follow(future: Future[Any], item: Work) -> None:
                running[future] = item
                future.add_done_callback(finished.put)

            def download(item: Work) -> None:
                follow(pool.submit(self._export_one, vault, item), item)

            def commit(future: Future[Any], item: Work) -> None:
                committing.add(future)
                follow(future, item)

            try:
                while remaining or running:
                    if len(remaining) > len(running) and time.monotonic() >= next_listing:
                        started_any, waiting, paced = self._round(vault, remaining, running, download, listed)
                        listed = None
                        next_listing = time.monotonic() + (0 if started_any else self.poll_interval)
                    with self._lock:
                        self.totals.waiting, self.totals.paced = waiting, paced
                        self.totals.downloading = len(running) - len(committing)
                    self.progress(self.totals)
                    if running:
                        timeout = max(0.0, next_listing - time.monotonic()) if waiting or paced else None
                        try:
                            done = [finished.get(timeout=timeout)]
                        except queue.Empty:
                            continue
                        while not finished.empty():
                            done.append(finished.get_nowait())
                        for future in done:
                            committing.discard(future)
                            if self._finished(running.pop(future), future, remaining, commit):
                                next_listing = 0.0  # its job's output went: look again now
                        continue
                    if not remaining:
                        break
                    if not waiting and not paced:
                        next_listing = 0.0
                        continue
                    if next_listing <= time.monotonic():
                        continue  # jobs were just started: they may be done already
                    if not wait_for_jobs:
                        raise StopExport(f"{waiting} archive(s) wait for their jobs and {paced} for the pacer")
                    pause = next_listing - time.monotonic()
                    if paced and not waiting:
                        when = min(self.pacer.when(w.size) for w in remaining.values())
                        pause = max(pause, when - self.pacer.clock())
                        log.info("paced: the next job may start in %.0f s", pause)
                        next_listing = time.monotonic() + pause
                    time.sleep(max(0.0, pause) + 0.01)
            finally:
                for future in running:
                    if future not in committing:  # a commit runs to its end, or aborts its upload
                        future.cancel()
                self.progress(self.totals)

    def _round(
        self,
        vault: str,
        remaining: dict[int, Work],
        running: dict[Future[None], Work],
        download: Callable[[Work], None],
        listed: JobList | None = None,
    ) -> tuple[bool, int, int]:
        """Match every archive not being downloaded with a job, starting at most
        a batch of jobs as the pacer allows, and download those ready.
        (jobs started?, waiting, paced)"""
        if listed is None:
            listed = self.jobs_listed(vault)
        batch = max(START_BATCH, self.totals.new_jobs)
        waiting = paced = 0
        busy = {id(w) for w in running.values()}
        to_start: list[tuple[int, Work]] = []
        pending: list[tuple[float, int]] = []  # the jobs of to_start, for the pacer
        for key, item in list(remaining.items()):
            if key in busy:
                continue
            job = self._pick(item, listed)
            if job is None:
                if item.job_id is not None:
                    log.warning(
                        "the output of job %s for %s expired before it was downloaded "
                        "(Glacier no longer lists it): starting a new job",
                        item.job_id[:16],
                        item.rel,
                    )
                    item.job_id = None
                if len(to_start) >= batch:
                    waiting += 1  # for the next round's batch
                    continue
                if not self.pacer.may_start(item.size, pending):
                    paced += 1
                    continue
                to_start.append((key, item))
                pending.append((self.pacer.clock(), item.size))
                continue
            if job.job_id != item.job_id:
                self._requested(vault, item, job.job_id)
                self.totals.reused_jobs += 1
                log.info("reusing job %s for %s: its output is still downloadable", job.job_id[:16], item.what)
                item.job_id = job.job_id
            if job.completed:
                item.listed = job
                download(item)
            else:
                waiting += 1
        # Started a batch at a time, as AWS's own solution does: one by one, a request's
        # latency per archive would set the pace of a vault of small files.
        assert self._starter is not None
        started = list(self._starter.map(lambda pair: self._start(vault, pair[1]), to_start))
        for (key, item), answered in zip(to_start, started, strict=True):
            if item.rel in self.totals.failures:
                del remaining[key]
            elif not answered or item.job_id is None:
                paced += 1
            else:
                waiting += 1
        return any(started), waiting, paced

    def _finished(
        self,
        work: Work,
        future: Future[Any],
        remaining: dict[int, Work],
        commit: Callable[[Future[Any], Work], None],
    ) -> bool:
        """Account for one download or commit; True if its job's output is gone
        and the archive needs another."""
        error = future.exception()
        if isinstance(error, errors.NoSpace):
            raise StopExport(str(error)) from error
        if isinstance(error, errors.NotFound):
            return True
        if error is None and isinstance(committed := future.result(), Future):
            commit(committed, work)  # verified; being named
            return False
        remaining.pop(id(work), None)
        if error is not None:
            self._fail(work.rel, str(error))
        return False

    def _export_one(self, vault: str, work: Work) -> Future[None] | None:
        """Download the job's output to a temporary file and verify it; then
        hand it to a commit thread to be named (an fsync, or an upload to S3,
        that need not hold a download slot). At most COMMITS_PER_DOWNLOAD x
        concurrency wait for theirs: an S3 chunk waits in memory."""
        if work.assembly is not None:
            return self._export_range(vault, work, work.assembly)
        item, job = work.item, work.listed
        assert job is not None and item.archive_id
        sink = self.dest.begin(work.rel, item)
        label, path, archive = self.dest.label, item.path, item.archive_id
        try:
            hashes = []
            for start in range(0, item.size, self.chunk_size):
                stop = min(start + self.chunk_size, item.size)
                hashes.append(
                    fetch_chunk(self.glacier, vault, job.job_id, start, stop, partial(sink.write, offset=start))
                )
            whole = combine(hashes).hex()
            expected = item.tree_hash or job.archive_tree_hash
            if expected and whole != expected:
                why = f"tree hash {whole}, expected {expected}"
                self.state.set(label, vault, path, archive, FAILED, job.job_id, why)
                raise errors.ChecksumMismatch(f"the output hashes to {whole}, the archive's tree hash is {expected}")
            self.state.set(label, vault, path, archive, VERIFIED, job.job_id)
        except BaseException:
            sink.abort()
            raise
        return self._hand_over(vault, work, sink)

    def _export_range(self, vault: str, work: Work, assembly: Assembly) -> Future[None] | None:
        """One range of a large archive into its place in the archive's sink,
        verified against the range's own tree hash (Glacier's, for an aligned
        range); the last range to land checks the whole, then hands it over."""
        item, job, span = work.item, work.listed, work.span
        assert job is not None and item.archive_id and span is not None
        label, path, archive = self.dest.label, item.path, item.archive_id
        try:
            sink = assembly.open(self.dest)
            hashes = []
            for start in range(span[0], span[1] + 1, self.chunk_size):
                stop = min(start + self.chunk_size, span[1] + 1)
                write = partial(sink.write, offset=start)
                hashes.append(fetch_chunk(self.glacier, vault, job.job_id, start - span[0], stop - span[0], write))
            got = combine(hashes).hex()
            if job.tree_hash and got != job.tree_hash:
                raise errors.ChecksumMismatch(f"bytes {span[0]}-{span[1]} hash to {got}, Glacier says {job.tree_hash}")
        except errors.NotFound:
            raise  # the job's output is gone: the range gets another job, the archive waits for it
        except BaseException:
            self._range_over(assembly, None, span[0])
            raise
        self.state.set_range(label, vault, path, archive, span, VERIFIED, job.job_id, got)
        if not self._range_over(assembly, bytes.fromhex(got), span[0]):
            return None
        whole = combine([assembly.hashes[first] for first in sorted(assembly.hashes)]).hex()
        expected = item.tree_hash or job.archive_tree_hash
        if expected and whole != expected:
            sink.abort()
            self.state.forget_ranges(label, vault, path)
            self.state.set(label, vault, path, archive, FAILED, job.job_id, f"tree hash {whole}, expected {expected}")
            raise errors.ChecksumMismatch(f"the ranges combine to {whole}, the archive's tree hash is {expected}")
        self.state.set(label, vault, path, archive, VERIFIED, job.job_id)
        log.info("%s: all %d ranges verified, and the whole", work.rel, len(assembly.hashes))
        return self._hand_over(vault, work, sink)

    def _range_over(self, assembly: Assembly, tree_hash: bytes | None, first: int) -> bool:
        """Count a range in (verified, or failed with None): True when it was the
        last and all were verified. After a failure, the sink is closed once the
        last range is over, keeping what was verified for a rerun."""
        with assembly.lock:
            assembly.pending -= 1
            if tree_hash is None:
                assembly.failed = True
            else:
                assembly.hashes[first] = tree_hash
            if assembly.pending or not assembly.failed:
                return not assembly.pending
        if assembly.sink is not None:
            assembly.sink.keep()
        return False

    def _hand_over(self, vault: str, work: Work, sink: Sink) -> Future[None]:
        assert self._committer is not None
        self._commit_slots.acquire()
        try:
            return self._committer.submit(self._commit, vault, work, sink)
        except BaseException:  # the run is over: its committer no longer takes work
            self._commit_slots.release()
            sink.abort()
            raise

    def _commit(self, vault: str, work: Work, sink: Sink) -> None:
        item = work.item
        assert item.archive_id and work.job_id
        try:
            sink.commit()
        finally:
            self._commit_slots.release()
        self.state.set(self.dest.label, vault, item.path, item.archive_id, WRITTEN, work.job_id)
        if work.span is not None:
            self.state.forget_ranges(self.dest.label, vault, item.path)
        self._done(item.size)
        log.info("exported %s (%d bytes), verified", work.rel, item.size)

    def _done(self, size: int) -> None:
        with self._lock:
            self.totals.files_done += 1
            self.totals.bytes_done += size

    def _fail(self, rel: str, why: str) -> None:
        with self._lock:
            self.totals.failures[rel] = why
        log.error("%s: %s", rel, why)
