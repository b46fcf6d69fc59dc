"""Inventories: what a vault holds by Glacier's account, reconciled with the catalog.

An inventory is a job of hours and describes the vault as it was up to two days
earlier, so the catalog stays the authority for what glacierfs itself did:
archives it deleted stay hidden, archives it uploaded after the inventory's date
stay listed. Archives the catalog does not know get entries named from their
descriptions. The output is parsed as a stream: 100,000 archives take seconds
and little memory.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glacierfs import errors, manifest, names, timestamps
from glacierfs.catalog import DIRECTORY, FILE, STORED, Catalog, Entry, new_entry
from glacierfs.glacier import GlacierClient
from glacierfs.paths import ancestors, parent_of
from glacierfs.periodic import Periodic
from glacierfs.retrieval import Retriever

log = logging.getLogger(__name__)

UNNAMED = "_unnamed"  # archives whose description names nothing, by archive id
MISSING = "missing"  # state of an entry a later inventory does not list
LAG_GRACE = 2 * 24 * 3600  # an inventory describes the vault up to two days earlier
CHUNK = 16 << 20


def iter_archives(path: Path, block: int = 1 << 20) -> Iterator[dict[str, Any]]:
    """Each object of the inventory's ArchiveList, read from ``path`` a block at a time."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as handle:
        buffer = ""
        while "[" not in buffer.partition('"ArchiveList"')[2]:
            more = handle.read(block)
            if not more:
                return
            buffer += more
        buffer = buffer.partition('"ArchiveList"')[2]
        buffer = buffer[buffer.index("[") + 1 :]
        while True:
            buffer = buffer.lstrip(" \t\r\n,")
            if buffer.startswith("]"):
                return
            try:
                item, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                more = handle.read(block)
                if not more:
                    raise errors.InvalidRequest("the inventory ends in the middle of an archive") from None
                buffer += more
                continue
            if isinstance(item, dict):
                yield item
            buffer = buffer[end:]


def inventory_date(path: Path) -> float:
    """InventoryDate, which comes before the ArchiveList."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    marker = head.find('"InventoryDate"')
    if marker < 0:
        return time.time()
    value = head[marker:].split(":", 1)[1].lstrip().lstrip('"')
    return timestamps.parse_iso(value[: value.find('"')]) or time.time()


class Inventories:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        retriever: Retriever | None,
        max_age: float = 24 * 3600,
        poll_interval: float = 900.0,
        scratch_dir: Path | None = None,
    ) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.retriever = retriever
        self.max_age = max_age
        self.poll_interval = poll_interval
        self.scratch_dir = scratch_dir
        self._checked: set[str] = set()
        self._lock = threading.Lock()
        self._follower = Periodic("inventory", poll_interval, self.poll_once)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
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
        ``force``) one Glacier lists that is newer than the inventory applied last; its id.
        A pending job is reused even when forced: a second one would describe the same vault."""
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
        for job in self.glacier.list_jobs(vault):
            if job.action != "InventoryRetrieval" or job.status == "Failed":
                continue
            if applied_date is None or (timestamps.parse_iso(job.created) or 0.0) > applied_date:
                return job.job_id
        return None

    def describe(self, vault: str) -> str:
        """user.glacier.inventory of a vault."""
        known = self.catalog.inventory(vault)
        if known is None:
            return "none"
        job_id, _, dated = known
        if job_id:
            return f"pending job={job_id}"
        return timestamps.iso(dated or 0)

    # Following ----------------------------------------------------------------

    def poll_once(self) -> None:
        for vault, job_id in self.catalog.pending_inventories():
            try:
                job = self.glacier.describe_job(vault, job_id)
            except errors.NotFound:
                log.warning("inventory job %s of vault %s is gone; asking again", job_id[:16], vault)
                known = self.catalog.inventory(vault)
                self.catalog.set_inventory(vault, None, None, known[2] if known else None)
                self.refresh(vault)
                continue
            if job.status == "Failed":
                log.error("Glacier failed the inventory job of vault %s: %s", vault, job.status_message)
                known = self.catalog.inventory(vault)
                self.catalog.set_inventory(vault, None, None, known[2] if known else None)
                continue
            if job.completed:
                self._download_and_apply(vault, job_id, job.inventory_size or 0)
        for vault in self.catalog.vaults():
            self.restore_manifest(vault)

    def _download_and_apply(self, vault: str, job_id: str, size: int) -> None:
        fd, name = tempfile.mkstemp(prefix="inventory-", dir=self.scratch_dir)
        path = Path(name)
        try:
            offset = 0
            while offset < size or offset == 0:
                last = min(offset + CHUNK, size) - 1 if size else None
                output = self.glacier.get_job_output(vault, job_id, None if last is None else (offset, last))
                os.write(fd, output.body)
                offset += len(output.body)
                if not output.body or last is None:
                    break
            os.close(fd)
            fd = -1
            dated = inventory_date(path)
            added, flagged = self.reconcile(vault, iter_archives(path), dated)
            self.catalog.set_inventory(vault, None, None, dated)
            log.info(
                "inventory of vault %s dated %s: %d archive(s) added, %d missing from it",
                vault,
                timestamps.iso(dated),
                added,
                flagged,
            )
        except errors.GlacierFSError as error:
            log.error("could not apply the inventory of vault %s: %s", vault, error)
        finally:
            if fd >= 0:
                os.close(fd)
            path.unlink(missing_ok=True)

    # Reconciling --------------------------------------------------------------

    def reconcile(self, vault: str, archives: Iterator[dict[str, Any]], dated: float) -> tuple[int, int]:
        """Add what the catalog does not know; flag what an inventory taken well
        after its upload does not list. (added, flagged)."""
        known = self.catalog.archive_paths(vault)
        deleted = self.catalog.deleted_ids(vault)
        kinds = self.catalog.kinds(vault)
        listed: set[str] = set()
        candidates: list[tuple[str, float, dict[str, Any], float | None]] = []
        for item in archives:
            archive_id = item.get("ArchiveId")
            if not isinstance(archive_id, str) or not archive_id:
                continue
            listed.add(archive_id)
            if archive_id in known or archive_id in deleted:
                continue
            description = item.get("ArchiveDescription")
            decoded = names.decode(description if isinstance(description, str) else "")
            created = timestamps.parse_iso(str(item.get("CreationDate", ""))) or 0.0
            if decoded is not None and manifest.is_manifest(decoded.path):
                self.catalog.add_manifest(vault, archive_id, created, _size(item), _tree_hash(item))
                continue
            path = decoded.path if decoded else f"{UNNAMED}/{archive_id}"
            candidates.append((path, created, item, decoded.mtime if decoded else None))

        # The newest archive of a name gets the name; older ones a documented suffix.
        candidates.sort(key=lambda c: (c[0], -c[1]))
        entries: list[Entry] = []
        moved: dict[str, int] = {}  # unnamed folders other than _unnamed, and how many went there
        for wanted, created, item, mtime in candidates:
            path = _free_path(wanted, created, item["ArchiveId"], kinds)
            if wanted.startswith(UNNAMED + "/") and not path.startswith(UNNAMED + "/"):
                folder = parent_of(path)
                moved[folder] = moved.get(folder, 0) + 1
            for directory in reversed(ancestors(path)):
                if directory not in kinds:
                    entries.append(new_entry(vault, directory, DIRECTORY, 0o755))
                    kinds[directory] = DIRECTORY
            kinds[path] = FILE
            entries.append(
                new_entry(vault, path, FILE, 0o644, int((mtime or created or time.time()) * 1e9)).but(
                    size=_size(item),
                    state=STORED,
                    archive_id=item["ArchiveId"],
                    tree_hash=_tree_hash(item),
                    created=str(item.get("CreationDate", "")) or None,
                )
            )
        self.catalog.put_many(entries)
        for folder, count in moved.items():
            log.warning(
                "vault %s holds a file named %s, so %d archive(s) without a usable name are in %s/",
                vault,
                UNNAMED,
                count,
                folder,
            )

        flagged = []
        for archive_id, entry in known.items():
            if archive_id in listed or entry.state != STORED:
                continue
            uploaded = timestamps.parse_iso(entry.created or "") or 0.0
            if uploaded and uploaded < dated - LAG_GRACE:
                flagged.append(entry.but(state=MISSING))
                log.warning(
                    "%s/%s (archive %s) is missing from an inventory taken well after its upload",
                    vault,
                    entry.path,
                    archive_id[:16],
                )
        if flagged:
            self.catalog.put_many(flagged)
        return sum(1 for e in entries if e.kind == FILE), len(flagged)

    # Manifests ----------------------------------------------------------------

    def restore_manifest(self, vault: str) -> None:
        """Apply the newest manifest, unless this catalog wrote or applied it."""
        manifests = self.catalog.manifests(vault)
        if not manifests or manifests[-1].applied or self.retriever is None:
            return
        newest = manifests[-1]
        target = self.retriever.whole(vault, newest.archive_id, newest.size, newest.tree_hash)
        cached = self.retriever.open_cached(target)
        if cached is None:
            try:
                self.retriever.request(target, explicit=True)  # small, and needed to show the tree
            except errors.GlacierFSError as error:
                log.warning("could not retrieve the manifest of vault %s: %s", vault, error)
            return
        with cached:
            data = cached.read()
        try:
            changed = manifest.apply(self.catalog, vault, manifest.decode(data))
        except errors.GlacierFSError as error:
            log.error("the manifest %s of vault %s is unusable: %s", newest.archive_id[:16], vault, error)
            changed = 0
        self.catalog.mark_manifest_applied(newest.archive_id)
        log.info("restored vault %s from its manifest %s (%d change(s))", vault, newest.archive_id[:16], changed)


def _size(item: dict[str, Any]) -> int:
    size = item.get("Size")
    return size if isinstance(size, int) and size >= 0 else 0


def _tree_hash(item: dict[str, Any]) -> str | None:
    value = item.get("SHA256TreeHash")
    return value if isinstance(value, str) else None


def _free_path(path: str, created: float, archive_id: str, kinds: dict[str, str]) -> str:
    """``path``, or where an archive goes when the name is taken: a file under a
    name that is a file gets a suffix; under a parent that is a file, _unnamed."""
    if any(kinds.get(parent) == FILE for parent in ancestors(path)):
        return _unnamed_path(archive_id, kinds)
    if path not in kinds:
        return path
    stamp = timestamps.compact(created or 0)
    candidate = f"{path}.older-{stamp}-{archive_id[:8]}"
    return candidate if candidate not in kinds else _unnamed_path(archive_id, kinds)


def _unnamed_path(archive_id: str, kinds: dict[str, str]) -> str:
    """_unnamed/ID, or _unnamed-2/ID, ... when the user holds a file named _unnamed
    (or that very path): never under a file, where the archive could not be seen."""
    for number in itertools.count(1):
        folder = UNNAMED if number == 1 else f"{UNNAMED}-{number}"
        path = f"{folder}/{archive_id}"
        if kinds.get(folder, DIRECTORY) == DIRECTORY and path not in kinds:
            return path
    raise AssertionError("unreachable")
