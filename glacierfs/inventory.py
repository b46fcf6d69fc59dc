"""Inventories: what a vault holds by Glacier's account, reconciled with the catalog.

An inventory is a job of hours and describes the vault as it was up to two days
earlier, so the catalog stays the authority for what glacierfs itself did:
archives it deleted stay hidden, archives it uploaded after the inventory's date
stay listed. Archives the catalog does not know get entries named from their
descriptions (reconcile.py, in SQL).

The output of a vault of millions is gigabytes: it is downloaded in ranges
into a file in the state directory, so a remount resumes it instead of paying
the transfer again, then parsed as a stream (inventoryfile.py). Progress shows
in ``user.glacier.inventory`` (``describe``). An inventory for another vault,
or older than the one applied, is refused and the log says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from glacierfs import errors, inventoryfile, reconcile, timestamps
from glacierfs.catalog import Catalog
from glacierfs.deletions import Deletions
from glacierfs.glacier import GlacierClient
from glacierfs.inventoryfile import iter_archives
from glacierfs.periodic import Periodic
from glacierfs.queuestore import QueueStore
from glacierfs.reconcile import LAG_GRACE, MISSING, UNNAMED, Copy
from glacierfs.records import Job
from glacierfs.staging import EarlyStaging
from glacierfs.treehash import MiB, combine, file_tree_hash, tree_aligned, tree_hash

__all__ = ["LAG_GRACE", "MISSING", "UNNAMED", "Inventories", "iter_archives"]

log = logging.getLogger(__name__)

CHUNK = 16 * MiB  # one GetJobOutput range: tree-hash aligned, and what one response holds in memory
DOWNLOADS = "inventories"  # under the state directory
GiB = 1 << 30


def _no_manifest(vault: str) -> None:
    """The manifest hook of an Inventories that restores none."""


class Inventories:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        state_dir: Path,
        max_age: float = 24 * 3600,
        poll_interval: float = 900.0,
        restore_manifest: Callable[[str], None] = _no_manifest,
        chunk_size: int = CHUNK,
    ) -> None:
        """``restore_manifest(vault)`` runs after each round of polling, for every
        vault: it applies the vault's newest manifest if there is one to apply."""
        self.glacier = glacier
        self.catalog = catalog
        self.deletions = Deletions(glacier, catalog, keep_replaced=False)
        self.doubts = QueueStore(catalog)
        self.downloads = state_dir / DOWNLOADS
        self.max_age = max_age
        self.poll_interval = poll_interval
        self.restore_manifest = restore_manifest
        self.chunk_size = chunk_size
        self._checked: set[str] = set()
        self._progress: dict[str, str] = {}  # vault -> what describe() shows while it is applied
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._follower = Periodic("inventory", poll_interval, self.poll_once)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        """Stop, cutting short a download or an application under way: the download
        is kept, so the next mount resumes it, and nothing of the application is."""
        self._stopping.set()
        self._follower.stop()

    # Asking ------------------------------------------------------------------

    def created_here(self, vault: str) -> None:
        """A vault glacierfs just created holds nothing it does not know."""
        self.catalog.set_inventory(vault, None, None, time.time())
        with self._lock:
            self._checked.add(vault)

    def seen(self, vault: str) -> None:
        """Called on every look at a vault; asks for an inventory when there is none, or it is old."""
        with self._lock:
            if vault in self._checked:
                return
            self._checked.add(vault)
        known = self.catalog.inventory(vault)
        if known is not None:
            job_id, _, dated = known
            if job_id or (dated and time.time() - dated < self.max_age):
                self._follower.wake()
                return
        self.refresh(vault)

    def refresh(self, vault: str, force: bool = False) -> str:
        """Start an inventory job, or reuse one: the job still pending, else (unless
        ``force``) the newest one Glacier lists that is newer than the inventory
        applied last; its id. A pending job is reused even when forced: a second
        one would describe the same vault."""
        previous = self.catalog.inventory(vault)
        if previous is not None and previous[0]:
            log.info("an inventory of vault %s is already pending (job %s)", vault, previous[0][:16])
            self._follower.wake()
            return previous[0]
        try:
            job_id = (
                None if force else self._recent_job(vault, previous[2] if previous else None)
            ) or self.glacier.initiate_inventory_retrieval(vault)
        except errors.GlacierFSError as error:
            with self._lock:
                self._checked.discard(vault)  # try again on the next look
            log.warning("could not request an inventory of vault %s: %s", vault, error)
            raise
        self.catalog.set_inventory(vault, job_id, time.time(), previous[2] if previous else None)
        log.info("requested an inventory of vault %s (job %s)", vault, job_id[:16])
        self._follower.wake()
        return job_id

    def _recent_job(self, vault: str, applied_date: float | None) -> str | None:
        """The newest whole-vault inventory job Glacier lists (another client's too,
        JSON or CSV) started after the inventory applied last."""
        newest: tuple[float, str] | None = None
        for job in self.glacier.list_jobs(vault):
            if job.action != "InventoryRetrieval" or job.status == "Failed":
                continue
            if job.inventory_partial:
                log.info("not reusing inventory job %s of vault %s: it lists part of the vault", job.job_id[:16], vault)
                continue
            created = timestamps.parse_iso(job.created) or 0.0
            if (applied_date is None or created > applied_date) and (newest is None or created > newest[0]):
                newest = (created, job.job_id)
        if newest is not None:
            log.info(
                "reusing inventory job %s of vault %s, started %s", newest[1][:16], vault, timestamps.iso(newest[0])
            )
        return newest[1] if newest else None

    def describe(self, vault: str) -> str:
        """user.glacier.inventory of a vault: the date of the inventory applied, or
        what is under way (pending job, download, application)."""
        with self._lock:
            progress = self._progress.get(vault)
        if progress:
            return progress
        known = self.catalog.inventory(vault)
        if known is None:
            return "none"
        job_id, _, dated = known
        if job_id:
            return f"pending job={job_id}"
        return timestamps.iso(dated) if dated is not None else "none"

    def _show(self, vault: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._progress.pop(vault, None)
            else:
                self._progress[vault] = text

    # Following ----------------------------------------------------------------

    def poll_once(self) -> None:
        pending = self.catalog.pending_inventories()
        self._forget_stale_downloads({self._download_path(vault, job_id).name for vault, job_id in pending})
        for vault, job_id in pending:
            try:
                job = self.glacier.describe_job(vault, job_id)
            except errors.NotFound:
                log.warning("inventory job %s of vault %s is gone; asking again", job_id[:16], vault)
                self._drop_pending(vault)
                self.refresh(vault)
                continue
            if job.status == "Failed":
                log.error("Glacier failed the inventory job of vault %s: %s", vault, job.status_message)
                self._drop_pending(vault)
                continue
            if job.completed:
                self._download_and_apply(vault, job)
        for vault in self.catalog.vaults():
            self.restore_manifest(vault)

    def _drop_pending(self, vault: str) -> None:
        known = self.catalog.inventory(vault)
        self.catalog.set_inventory(vault, None, None, known[2] if known else None)

    def _download_path(self, vault: str, job_id: str) -> Path:
        digest = hashlib.sha256(f"{vault}/{job_id}".encode()).hexdigest()[:32]
        return self.downloads / f"{digest}.inventory"

    def _forget_stale_downloads(self, keep: set[str]) -> None:
        """Partial downloads of jobs no longer pending (applied, refused, expired)."""
        if not self.downloads.is_dir():
            return
        for stale in self.downloads.iterdir():
            if stale.name not in keep:
                stale.unlink(missing_ok=True)

    def _download_and_apply(self, vault: str, job: Job) -> None:
        path = self._download_path(vault, job.job_id)
        early: EarlyStaging | None = None
        try:
            self.downloads.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._drop_oversized(vault, job, path)
            if (job.inventory_format or "JSON").upper() == inventoryfile.JSON:
                path.touch()  # the staging processes read it as it is written
                early = EarlyStaging.start_if_useful(self.catalog.path, vault, path, job.inventory_size)
            total = self._download(vault, job, path)
            self.apply_file(
                vault,
                path,
                fallback_date=timestamps.parse_iso(job.created),
                declared=job.inventory_format,
                total=total,
                early=early,
            )
        except _Stopped:
            log.info("stopped with the inventory of vault %s under way: the next mount goes on with it", vault)
            return
        except errors.GlacierFSError as error:
            log.error("could not apply the inventory of vault %s: %s", vault, error)
            return
        finally:
            if early is not None:
                early.discard()  # not taken: the download or its checks failed, or the inventory was refused
            self._show(vault, None)
        path.unlink(missing_ok=True)

    def _drop_oversized(self, vault: str, job: Job, path: Path) -> None:
        """A partial download larger than the output is not of it: fetched again."""
        size = job.inventory_size
        if size is not None and path.exists() and path.stat().st_size > size:
            log.warning("the partial inventory of vault %s is larger than the output: fetched again", vault)
            path.unlink()

    def _download(self, vault: str, job: Job, path: Path) -> int | None:
        """Ranged GetJobOutput appended to ``path``; what a previous mount left there
        is kept, so only the rest is fetched. Each range is checked against the
        tree hash the service sends with it, when it sends one. The archives it
        lists, counted on the way when it was fetched whole here (else None).
        The caller has made the directory and dropped an oversized partial file."""
        size = job.inventory_size
        done = path.stat().st_size if path.exists() else 0
        counter = None if done else inventoryfile.ArchiveCounter()
        if done:
            log.info("resuming the download of the inventory of vault %s at %s", vault, _bytes_text(done, size or done))
        # Each range is written by a thread while the next one is fetched (a write of
        # 16 MiB into the page cache takes about as long as its download), one at
        # a time, in order; whatever stops the loop, what was fetched is on file.
        # The whole file's tree hash, where the service gives one to check (it gives
        # none for an inventory job, the emulator neither: no hashing at all then),
        # from its ranges' when it is fetched whole here in ranges of 1 MiB x 2^n (not
        # by reading the file again at the end).
        wanted = job.tree_hash and not done and tree_aligned(self.chunk_size)
        ranges: list[bytes] | None = [] if wanted else None
        with open(path, "ab") as out, ThreadPoolExecutor(1, thread_name_prefix="inventory-write") as writer:
            pending: Future[None] | None = None
            try:
                while size is None or done < size:
                    self._check_stopping()
                    self._show(vault, f"downloading {_bytes_text(done, size or 0)}")
                    last = min(done + self.chunk_size, size) - 1 if size else None
                    output = self.glacier.get_job_output(vault, job.job_id, (done, last) if last is not None else None)
                    body = output.body
                    whole_range = last is not None and len(body) == last - done + 1
                    if whole_range and (output.tree_hash or ranges is not None):
                        actual = tree_hash(body)
                        if output.tree_hash and actual != output.tree_hash:
                            raise errors.ChecksumMismatch(
                                f"bytes {done}-{last} of the inventory of vault {vault} hash to {actual}, "
                                f"Glacier says {output.tree_hash}"
                            )
                        if ranges is not None:
                            ranges.append(bytes.fromhex(actual))
                    elif not whole_range:
                        ranges = None
                    if not body:
                        if size is None:
                            break
                        raise errors.InvalidRequest(
                            f"Glacier sent no bytes of the inventory of vault {vault} at {done}"
                        )
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(_append, out, body)
                    if counter is not None:
                        counter.feed(body)
                    done += len(body)
                    if size is None:
                        break
            finally:
                if pending is not None:
                    pending.result()
            os.fsync(out.fileno())
        if job.tree_hash and (combine(ranges).hex() if ranges else file_tree_hash(path)) != job.tree_hash:
            path.unlink()
            raise errors.ChecksumMismatch(f"the inventory of vault {vault} does not match its tree hash")
        return None if counter is None else counter.total

    # Applying -----------------------------------------------------------------

    def apply_file(
        self,
        vault: str,
        path: Path,
        fallback_date: float | None = None,
        declared: str | None = None,
        total: int | None = None,
        early: EarlyStaging | None = None,
    ) -> reconcile.Outcome | None:
        """Apply the inventory in ``path`` (JSON or CSV) to ``vault``; None if it is refused.

        ``fallback_date`` dates an inventory that carries no date (CSV): the job's creation.
        ``total``: the archives it lists, if counted already (for the progress shown).
        ``early``: the file staged while it was downloaded, if it was (the caller discards it)."""
        header = inventoryfile.read_header(path)
        if declared and declared.upper() != header.format:
            log.warning(
                "the inventory job of vault %s said %s but sent %s: read as sent", vault, declared, header.format
            )
        previous = self.catalog.inventory(vault)
        applied = previous[2] if previous else None
        dated = timestamps.parse_iso(header.date or "") or fallback_date
        if dated is None:
            dated = time.time()
            log.warning("the inventory of vault %s carries no date: taken as of now", vault)
        problem = self._refusal(vault, header, dated, applied)
        if problem:
            log.error("refused the inventory of vault %s: %s", vault, problem)
            self.catalog.set_inventory(vault, None, None, applied)
            return None
        if total is None:
            total = inventoryfile.count_archives(path)
        self._show(vault, f"applying 0 of {_count_text(total)}")
        outcome = reconcile.reconcile(
            self.catalog.path,
            vault,
            path,
            dated,
            progress=lambda done: self._applying(vault, done, total),
            expected=total,
            early=early,
        )
        self.catalog.set_inventory(vault, None, None, dated)
        self._settle_doubts(vault, outcome.copies, dated)
        log.info(
            "inventory of vault %s dated %s: %d archive(s) listed, %d added, %d missing from it",
            vault,
            timestamps.iso(dated),
            outcome.listed,
            outcome.added,
            outcome.flagged,
        )
        return outcome

    def _settle_doubts(self, vault: str, copies: tuple[Copy, ...], dated: float) -> None:
        """Delete the copies of write-back uploads a crash cut short (see
        queuestore.py), and forget the doubts settled: by a deletion, or by an
        inventory late enough to have shown a copy."""
        gone = []
        for copy in copies:
            try:
                self.deletions.delete(vault, copy.archive_id)
            except errors.GlacierFSError as error:
                log.error(
                    "could not delete archive %s, a second copy of %s/%s: %s",
                    copy.archive_id[:16],
                    vault,
                    copy.path,
                    error,
                )
                continue
            log.warning(
                "deleted the second copy (archive %s) of %s/%s, stored by an upload a crash cut short",
                copy.archive_id[:16],
                vault,
                copy.path,
            )
            gone.append((copy.spool_id, copy.path))
        self.doubts.settled(vault, gone, older_than=dated - LAG_GRACE)

    def _applying(self, vault: str, done: int, total: int) -> None:
        self._check_stopping()
        self._show(vault, f"applying {_count_text(min(done, total))} of {_count_text(total)}")

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopped

    def _refusal(self, vault: str, header: inventoryfile.Header, dated: float, applied: float | None) -> str | None:
        """Why this inventory must not be applied, if it must not."""
        if header.vault_arn:
            fields = header.vault_arn.split(":")  # arn:aws:glacier:REGION:ACCOUNT:vaults/NAME
            named = fields[-1].removeprefix("vaults/") if fields[-1].startswith("vaults/") else None
            region = fields[3] if len(fields) > 5 else None
            if named != vault or (region and region != self.glacier.region):
                return f"it describes {header.vault_arn}, not vault {vault} in {self.glacier.region}"
        if applied is not None and int(dated) < int(applied):  # dates are read to the second
            return (
                f"it is dated {timestamps.iso(dated)}, older than the inventory applied "
                f"({timestamps.iso(applied)}): the catalog keeps the newer one"
            )
        return None

    def reconcile(self, vault: str, archives: Iterable[dict[str, Any]], dated: float) -> tuple[int, int]:
        """Apply archives (as the inventory's JSON names them) to ``vault``: (added, flagged)."""
        outcome = reconcile.reconcile(self.catalog.path, vault, archives, dated)
        return outcome.added, outcome.flagged


class _Stopped(Exception):
    """The mount is stopping: what is under way stops where it is."""


def _append(out: BinaryIO, body: bytes) -> None:
    out.write(body)
    out.flush()


def _bytes_text(done: int, total: int) -> str:
    """'1.2 of 2.8 GiB', in the unit that suits the total."""
    unit, scale = ("GiB", GiB) if total >= GiB else ("MiB", MiB) if total >= MiB else ("KiB", 1024)
    return f"{done / scale:.1f} of {total / scale:.1f} {unit}"


def _count_text(count: int) -> str:
    """3400000 -> '3.4M', 12000 -> '12k'."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    return str(count)
