"""Retrieved content on local disk: diskcache stores it, least recently used
goes first.

Only verified bytes are put here. Readers get an open file and read by offset,
so no archive is loaded into memory; a reader keeps its file open, so an
archive that is open stays readable even if eviction takes its entry (its
space comes back when the last reader closes it).

diskcache's own culling removes up to ten items whenever the cache is over its
limit — with archives of gigabytes that can throw out the archive just
retrieved, and the next open would pay for it again. So diskcache only stores
(no culling), and a small index here keeps the order of use and evicts one
item at a time, never the one just added. Finished downloads are renamed into
its store, not copied (_MovingDisk).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

from glacierfs.sqlitedb import LockedDatabase
from glacierfs.treehash import file_tree_hash

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS used (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS used_by_age ON used (last_used);
"""


class _Finished:
    """A finished file beside the store, to be moved into it rather than copied."""

    def __init__(self, path: Path) -> None:
        self.path = path


class _MovingDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache stores a file it is given by copying it; an archive of gigabytes
    that already lies on the same disk is renamed into the store instead."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Finished):
            return super().store(value, read, key)  # type: ignore[no-any-return]
        filename, full_path = self.filename(key, value)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        try:
            os.rename(value.path, full_path)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            with open(value.path, "rb") as source:  # another filesystem after all: copy
                return super().store(source, True, key)  # type: ignore[no-any-return]
        return os.path.getsize(full_path), MODE_BINARY, filename, None


def content_key(archive_id: str, start: int | None) -> str:
    """Whole archives are keyed by id, ranges by id and first byte."""
    return archive_id if start is None else f"{archive_id}@{start}"


class ContentCache:
    def __init__(self, directory: Path, size_limit: int) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.size_limit = size_limit
        self._cache = diskcache.Cache(
            str(directory / "content"),
            size_limit=1 << 62,  # eviction is ours (see above)
            eviction_policy="none",
            cull_limit=0,
            disk_min_file_size=0,  # every value is a file: read by offset, never whole
            disk=_MovingDisk,
        )
        self._index = LockedDatabase(directory / "lru.sqlite", SCHEMA)
        self._scratch = directory / "incoming"
        self._scratch.mkdir(exist_ok=True, mode=0o700)
        self._reconcile_index()

    def close(self) -> None:
        self._cache.close()
        self._index.close()

    def _reconcile_index(self) -> None:
        """After a crash the index and the store may disagree; the store wins."""
        stored = set(self._cache.iterkeys())
        indexed = {row[0] for row in self._index.query("SELECT key FROM used")}
        for key in indexed - stored:
            self._index.execute("DELETE FROM used WHERE key=?", (key,))
        for key in stored - indexed:
            handle = self._cache.get(key, read=True)
            if handle is None:
                continue
            with handle:
                size = os.fstat(handle.fileno()).st_size
            self._index.execute("INSERT INTO used (key, size, last_used) VALUES (?,?,0)", (key, size))

    def open(self, archive_id: str, start: int | None = None) -> BinaryIO | None:
        """An open file of the cached bytes, or None. Counts as a use."""
        key = content_key(archive_id, start)
        handle = self._cache.get(key, read=True)
        if handle is not None:
            self._index.execute("UPDATE used SET last_used=? WHERE key=?", (time.time(), key))
        return handle  # type: ignore[no-any-return]

    def has(self, archive_id: str, start: int | None = None) -> bool:
        return content_key(archive_id, start) in self._cache

    def scratch_file(self, size: int = 0) -> Path:
        """A new empty file beside the cache, for ``size`` bytes on their way in.
        Refused at once (ENOSPC) when the disk lacks that room, rather than after
        filling it and starving everything else that wants in."""
        free = shutil.disk_usage(self._scratch).free
        if size > free:
            raise OSError(errno.ENOSPC, f"{size} bytes would not fit the {free} bytes free", str(self._scratch))
        fd, name = tempfile.mkstemp(dir=self._scratch, prefix="download-")
        os.close(fd)
        return Path(name)

    def adopt(self, archive_id: str, start: int | None, path: Path) -> None:
        """Move verified bytes from ``path`` (beside the cache) into the cache, then make room."""
        key = content_key(archive_id, start)
        size = path.stat().st_size
        self._cache.set(key, _Finished(path), read=True)
        path.unlink(missing_ok=True)  # copied, not moved, if it lay on another filesystem
        self._index.execute(
            "INSERT OR REPLACE INTO used (key, size, last_used) VALUES (?,?,?)", (key, size, time.time())
        )
        self._evict(keep=key)

    def _evict(self, keep: str) -> None:
        """Least recently used first, one at a time, until the cache fits its limit."""
        while self.usage()[0] > self.size_limit:
            row = self._index.query_one(
                "SELECT key FROM used WHERE key<>? ORDER BY last_used LIMIT 1", (keep,)
            )
            if row is None:
                return  # only the newest is left: a cache may hold one archive over its limit
            self._cache.delete(row[0])
            self._index.execute("DELETE FROM used WHERE key=?", (row[0],))
            log.info("evicted %s from the cache", row[0][:16])

    def usage(self) -> tuple[int, int]:
        """(bytes, entries) held."""
        total, count = self._index.query_one("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM used")
        return total, count


class Incoming:
    """A copy of an archive being uploaded, written beside the cache part by part
    (--cache-writes), so that reading one's own upload back costs no retrieval.

    Best effort: a copy that fails, or that would not fit the cache, is dropped,
    never the upload. It enters the cache only once Glacier has stored the
    archive and the copy's tree hash, read back from disk, matches Glacier's.
    """

    def __init__(self, cache: ContentCache) -> None:
        self._cache = cache
        self._lock = threading.Lock()  # parts arrive from several upload threads
        self.path: Path | None = None
        self._fd: int | None = None
        try:
            self.path = cache.scratch_file()
            self._fd = os.open(self.path, os.O_WRONLY)
        except OSError as error:
            log.warning("not keeping a copy of this upload in the cache: %s", error)
            self.discard()

    def write(self, offset: int, data: bytes | bytearray) -> None:
        with self._lock:
            if self._fd is None:
                return
            if offset + len(data) > self._cache.size_limit:
                log.info("not keeping a copy of this upload: it is larger than the cache (--cache-size)")
                self._discard()
                return
            try:
                view = memoryview(data)
                while view:
                    written = os.pwrite(self._fd, view, offset)
                    view, offset = view[written:], offset + written
            except OSError as error:
                log.warning("not keeping a copy of this upload in the cache: %s", error)
                self._discard()

    def keep(self, archive_id: str, size: int, tree_hash: str) -> None:
        """Adopt the copy as the cached bytes of the stored ``archive_id``."""
        with self._lock:
            if self._fd is None or self.path is None:
                return
            os.close(self._fd)
            self._fd = None
            path = self.path
        try:
            copied_size = path.stat().st_size
            if copied_size != size:
                log.error("the cache's copy of archive %s holds %d bytes, not %d: dropped",
                          archive_id[:16], copied_size, size)
            elif (copied := file_tree_hash(path)) != tree_hash:
                log.error("the cache's copy of archive %s has tree hash %s, not Glacier's %s: dropped",
                          archive_id[:16], copied, tree_hash)
            else:
                self._cache.adopt(archive_id, None, path)
        except OSError as error:
            log.warning("could not keep the copy of archive %s in the cache: %s", archive_id[:16], error)
        finally:
            self.discard()  # whatever the cache did not take

    def discard(self) -> None:
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
