"""The manifest: a copy, kept in the vault itself, of what only the catalog knows.

Renames, times, modes, empty files and empty directories live in the catalog,
which a lost disk loses. After changes settle, and at unmount, glacierfs
uploads a small gzipped JSON archive holding the vault's tree. Its description
names it `.glacierfs/manifest-<time>.json.gz` in FastGlacier's format, so other
tools show what it is; glacierfs keeps it out of listings. A fresh catalog
given the inventory and the newest manifest shows the same tree again.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from glacierfs import errors, names, timestamps
from glacierfs.catalog import DIRECTORY, EMPTY, FILE, Catalog, Entry, new_entry
from glacierfs.paths import ancestors
from glacierfs.periodic import Periodic

if TYPE_CHECKING:  # the staging processes import this module: not boto3 with it (0.1 s of CPU each)
    from glacierfs.glacier import GlacierClient

log = logging.getLogger(__name__)

MANIFEST_DIR = ".glacierfs"
_MANIFEST = re.compile(r"^\.glacierfs/manifest-\d{8}T\d{6}Z\.json\.gz$")
FREE_DELETION_AGE = 90 * 24 * 3600  # deleting an archive younger than this is charged as 90 days


def is_manifest(path: str) -> bool:
    return bool(_MANIFEST.match(path))


def encode(vault: str, entries: list[Entry]) -> bytes:
    body = {
        "format": "glacierfs-manifest",
        "version": 1,
        "vault": vault,
        "written": time.time(),
        "entries": [
            {
                "path": e.path,
                "kind": e.kind,
                "archive_id": e.archive_id,
                "size": e.size,
                "mtime_ns": e.mtime_ns,
                "mode": e.mode,
            }
            for e in entries
            if e.state != "uploading" and not e.path.startswith(MANIFEST_DIR + "/")
        ],
    }
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode())


def decode(data: bytes) -> list[dict[str, Any]]:
    try:
        body = json.loads(gzip.decompress(data))
    except (OSError, ValueError, EOFError) as error:
        raise errors.InvalidRequest(f"not a glacierfs manifest: {error}") from error
    if not isinstance(body, dict) or body.get("format") != "glacierfs-manifest":
        raise errors.InvalidRequest("not a glacierfs manifest")
    return [e for e in body.get("entries", []) if isinstance(e, dict) and isinstance(e.get("path"), str)]


def apply(catalog: Catalog, vault: str, manifest: list[dict[str, Any]]) -> int:
    """Arrange the vault's entries as the manifest says; return how many changed.

    Archives are matched by id. An archive the manifest does not know (uploaded
    after it) keeps the name its description gave it.
    """
    by_archive = catalog.archive_paths(vault)
    taken = set(catalog.kinds(vault))
    listed_dirs = set()
    changed = 0
    for item in sorted(manifest, key=lambda i: (i["path"].count("/"), i["path"])):
        path = names.sanitize(item["path"])
        if not path or is_manifest(path):
            continue
        mtime_ns = int(item.get("mtime_ns") or time.time_ns())
        mode = int(item.get("mode") or (0o755 if item.get("kind") == DIRECTORY else 0o644))
        _ensure_parents(catalog, vault, path, taken)
        if item.get("kind") == DIRECTORY:
            listed_dirs.add(path)
            existing = catalog.get(vault, path)
            if existing is None:
                catalog.put(new_entry(vault, path, DIRECTORY, mode, mtime_ns))
                taken.add(path)
                changed += 1
            elif existing.is_dir:
                catalog.put(existing.but(mtime_ns=mtime_ns, mode=mode))
            continue
        archive_id = item.get("archive_id")
        if not archive_id:  # an empty file
            if path not in taken:
                catalog.put(new_entry(vault, path, FILE, mode, mtime_ns).but(state=EMPTY))
                taken.add(path)
                changed += 1
            continue
        entry = by_archive.get(archive_id)
        if entry is None:
            continue  # deleted since the manifest was written
        if entry.path != path and path not in taken:
            catalog.rename(vault, entry.path, path)
            taken.discard(entry.path)
            taken.add(path)
            changed += 1
        catalog.put((catalog.get(vault, path) or entry).but(mtime_ns=mtime_ns, mode=mode))
    # Directories made only to hold names the manifest has moved away.
    for entry in sorted(catalog.entries(vault), key=lambda e: -e.path.count("/")):
        if entry.is_dir and entry.path not in listed_dirs and not catalog.has_children(vault, entry.path):
            catalog.delete(vault, entry.path)
    return changed


def _ensure_parents(catalog: Catalog, vault: str, path: str, taken: set[str]) -> None:
    for directory in reversed([parent for parent in ancestors(path) if parent not in taken]):
        catalog.put(new_entry(vault, directory, DIRECTORY, 0o755))
        taken.add(directory)


class ManifestKeeper:
    """Writes a vault's manifest once its changes have settled for ``delay`` seconds."""

    def __init__(self, glacier: GlacierClient, catalog: Catalog, delay: float = 60.0) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.delay = delay
        self._changed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._writer = Periodic("manifest", min(1.0, max(delay / 4, 0.05)), self._write_settled)

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        """Write what is pending (unmount) and stop."""
        self._writer.stop()
        for vault in list(self._changed):
            try:
                self.write(vault)
            except errors.GlacierFSError as error:
                log.error("could not write the manifest of vault %s at unmount: %s", vault, error)

    def changed(self, vault: str) -> None:
        with self._lock:
            self._changed[vault] = time.monotonic()

    def _write_settled(self) -> None:
        now = time.monotonic()
        with self._lock:
            settled = [v for v, at in self._changed.items() if now - at >= self.delay]
        for vault in settled:
            self.write(vault)

    def write(self, vault: str) -> None:
        with self._lock:
            changed_at = self._changed.pop(vault, None)
        if changed_at is None or not self.catalog.has_vault(vault):
            return
        stamp = timestamps.compact(time.time())
        path = f"{MANIFEST_DIR}/manifest-{stamp}.json.gz"
        try:
            body = encode(vault, self.catalog.entries(vault))
            archive = self.glacier.upload_archive(vault, body, names.encode(path, time.time()))
        except errors.GlacierFSError as error:
            log.error("could not store the manifest of vault %s (will retry): %s", vault, error)
            with self._lock:
                self._changed.setdefault(vault, changed_at)
            return
        self.catalog.add_manifest(vault, archive.archive_id, time.time(), len(body), archive.tree_hash, applied=True)
        log.info("stored the manifest of vault %s (%d bytes) as archive %s", vault, len(body), archive.archive_id[:16])
        self._prune(vault)

    def _prune(self, vault: str) -> None:
        """Delete older manifests, but only once deleting them is free (90 days)."""
        for old in self.catalog.manifests(vault)[:-1]:
            archive_id = old.archive_id
            if time.time() - old.created < FREE_DELETION_AGE:
                continue
            try:
                self.glacier.delete_archive(vault, archive_id)
            except errors.NotFound:
                pass
            except errors.GlacierFSError as error:
                log.warning("could not delete old manifest %s of vault %s: %s", archive_id[:16], vault, error)
                continue
            self.catalog.record_deleted(vault, archive_id)
            self.catalog.forget_manifest(archive_id)
