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

The cache directory belongs to the user, who may change, delete or remove any
of it while a mount runs. So "cached" is checked at every open, never
remembered: the index keeps, per item, the tree hash its bytes were verified
against and what its file looked like then (size, inode, mtime, ctime). A file
that still looks the same is served; one that changed is hashed again and
served only if it still matches; one that is gone, or no longer matches, is
forgotten, so it is fetched again. A removed cache directory is made anew.

Downloads on their way in are scratch files in ``incoming/``, each held under
an flock for as long as its process lives: a file nobody holds was left by a
process that died (kill -9), and the next mount of this cache removes it,
never touching the files of a live mount that shares the directory.
"""

from __future__ import annotations

import errno
import fcntl
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

INDEX = "lru.sqlite"
SCHEMA = """
DROP TABLE IF EXISTS used;  -- the index before items kept what they were verified as
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    last_used REAL NOT NULL,
    tree_hash TEXT,          -- what the bytes were verified against
    inode INTEGER,           -- and what their file looked like then
    mtime_ns INTEGER,
    ctime_ns INTEGER
);
CREATE INDEX IF NOT EXISTS items_by_age ON items (last_used);
"""
SCRATCH_PREFIX = "download-"


class _Finished:
    """A finished file beside the store, to be moved into it rather than copied."""

    def __init__(self, path: Path) -> None:
        self.path = path


class _MovingDisk(diskcache.Disk):
    """diskcache stores a file it is given by copying it; an archive of gigabytes
    that already lies on the same disk is renamed into the store instead."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Finished):
            return super().store(value, read, key)
        filename, full_path = self.filename(key, value)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        try:
            os.rename(value.path, full_path)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            with open(value.path, "rb") as source:  # another filesystem after all: copy
                return super().store(source, True, key)
        return os.path.getsize(full_path), MODE_BINARY, filename, None


def content_key(archive_id: str, start: int | None) -> str:
    """Whole archives are keyed by id, ranges by id and first byte."""
    return archive_id if start is None else f"{archive_id}@{start}"


def _looks(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What a cache file looked like: any write, truncation or replacement changes it."""
    return stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


class _Store:
    """diskcache and the index, as they are opened on one cache directory."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.content = diskcache.Cache(
            str(directory / "content"),
            size_limit=1 << 62,  # eviction is ours (see above)
            eviction_policy="none",
            cull_limit=0,
            disk_min_file_size=0,  # every value is a file: read by offset, never whole
            disk=_MovingDisk,
        )
        self.index = LockedDatabase(directory / INDEX, SCHEMA)
        self.scratch = directory / "incoming"
        self.scratch.mkdir(exist_ok=True, mode=0o700)
        self.identity = self._identity(directory)

    @staticmethod
    def _identity(directory: Path) -> tuple[int, int] | None:
        """The inodes of both databases: they change, or vanish, when someone removes the directory."""
        try:
            return (os.stat(directory / INDEX).st_ino, os.stat(directory / "content" / "cache.db").st_ino)
        except OSError:
            return None

    def intact(self, directory: Path) -> bool:
        return self.identity is not None and self._identity(directory) == self.identity

    def close(self) -> None:
        self.content.close()
        self.index.close()


class ContentCache:
    def __init__(self, directory: Path, size_limit: int) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self._reopen_lock = threading.Lock()
        self._scratch_locks: dict[Path, int] = {}  # scratch file -> descriptor holding its flock
        self._scratch_lock = threading.Lock()
        self._store = _Store(directory)
        self._reconcile_index(self._store)
        self._remove_abandoned_scratch()

    def close(self) -> None:
        self._store.close()
        with self._scratch_lock:
            for fd in self._scratch_locks.values():
                os.close(fd)
            self._scratch_locks.clear()

    def _current(self) -> _Store:
        """The store, made anew if the cache directory was removed under the mount."""
        store = self._store
        if store.intact(self.directory):
            return store
        with self._reopen_lock:
            if self._store is store:  # nobody beat us to it
                log.warning(
                    "the cache directory %s was removed or replaced while mounted; "
                    "starting an empty one there (what was cached will be fetched again)",
                    self.directory,
                )
                # The old connections are left to the garbage collector: other
                # threads may be in the middle of a call on them.
                self._store = _Store(self.directory)
                self._reconcile_index(self._store)
            return self._store

    @property
    def _scratch(self) -> Path:
        return self._current().scratch

    def _reconcile_index(self, store: _Store) -> None:
        """After a crash the index and the store may disagree; the store wins.
        An item the index does not know is checked at its next open."""
        stored = set(store.content.iterkeys())
        indexed = {row[0] for row in store.index.query("SELECT key FROM items")}
        for key in indexed - stored:
            store.index.execute("DELETE FROM items WHERE key=?", (key,))
        for key in stored - indexed:
            handle = store.content.get(key, read=True)
            if handle is None:
                store.content.delete(key)
                continue
            with handle:
                size = os.fstat(handle.fileno()).st_size
            store.index.execute("INSERT INTO items (key, size, last_used) VALUES (?,?,0)", (key, size))

    def _remove_abandoned_scratch(self) -> None:
        """Remove downloads whose process died: nobody holds their flock."""
        scratch = self._scratch
        for path in scratch.iterdir():
            if not path.name.startswith(SCRATCH_PREFIX):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live process is writing it
            finally:
                os.close(fd)
            path.unlink(missing_ok=True)
            log.info("removed %s, a download left behind by a glacierfs that stopped without cleaning up", path.name)

    # Reading -------------------------------------------------------------------

    def open(self, archive_id: str, start: int | None = None, tree_hash: str | None = None) -> BinaryIO | None:
        """An open file of the cached bytes, checked to be what was verified, or
        None. Counts as a use. ``tree_hash`` is what the bytes should hash to,
        for an item the index has no record of."""
        return self._checked(content_key(archive_id, start), tree_hash, use=True)

    def has(self, archive_id: str, start: int | None = None, tree_hash: str | None = None) -> bool:
        handle = self._checked(content_key(archive_id, start), tree_hash, use=False)
        if handle is None:
            return False
        handle.close()
        return True

    def _checked(self, key: str, expected: str | None, use: bool) -> BinaryIO | None:
        store = self._current()
        handle: BinaryIO | None = store.content.get(key, read=True)
        row = store.index.query_one("SELECT tree_hash, size, inode, mtime_ns, ctime_ns FROM items WHERE key=?", (key,))
        if handle is None:
            if row is not None or key in store.content:
                log.warning(
                    "the cached file of %s is gone from the cache directory; it will be fetched again", key[:16]
                )
                self._forget(store, key)
            return None
        try:
            looks = _looks(os.fstat(handle.fileno()))
            if row is None or tuple(row[1:]) != looks:
                verified_as = (row[0] if row else None) or expected
                if verified_as is None:
                    # Kept from before the index held tree hashes (or a crash between
                    # storing and indexing it): served once a caller says what it must hash to.
                    log.debug("the cached file of %s has no tree hash to check it against yet", key[:16])
                    handle.close()
                    return None
                if not self._still_verified(store, key, handle, verified_as, looks):
                    handle.close()
                    self._forget(store, key)
                    return None
            if use:
                store.index.execute("UPDATE items SET last_used=? WHERE key=?", (time.time(), key))
        except BaseException:
            handle.close()
            raise
        return handle

    def _still_verified(
        self, store: _Store, key: str, handle: BinaryIO, verified_as: str, looks: tuple[int, int, int, int]
    ) -> bool:
        """A cache file changed since it was verified: is it still those bytes?"""
        now = file_tree_hash(handle.fileno())  # the very file a reader would get
        if now != verified_as:
            log.error(
                "the cached file of %s was changed behind the mount's back (tree hash %s, verified as %s); "
                "it is dropped and will be fetched again",
                key[:16],
                now,
                verified_as,
            )
            return False
        log.info(
            "the cached file of %s was not as last seen, and was hashed again: it matches, so it is kept", key[:16]
        )
        size, inode, mtime_ns, ctime_ns = looks
        store.index.execute(
            "INSERT INTO items (key, size, last_used, tree_hash, inode, mtime_ns, ctime_ns) VALUES (?,?,0,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET size=excluded.size, tree_hash=excluded.tree_hash, "
            "inode=excluded.inode, mtime_ns=excluded.mtime_ns, ctime_ns=excluded.ctime_ns",
            (key, size, verified_as, inode, mtime_ns, ctime_ns),
        )
        return True

    def _forget(self, store: _Store, key: str) -> None:
        store.content.delete(key)
        store.index.execute("DELETE FROM items WHERE key=?", (key,))

    # Writing -------------------------------------------------------------------

    def scratch_file(self, size: int = 0) -> Path:
        """A new empty file beside the cache, for ``size`` bytes on their way in.
        Refused at once (ENOSPC) when the disk lacks that room, rather than after
        filling it and starving everything else that wants in. Hand it back with
        ``adopt`` or ``discard_scratch``."""
        scratch = self._scratch
        free = shutil.disk_usage(scratch).free
        if size > free:
            raise OSError(errno.ENOSPC, f"{size} bytes would not fit the {free} bytes free", str(scratch))
        fd, name = tempfile.mkstemp(dir=scratch, prefix=SCRATCH_PREFIX)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours while this process lives (see the module's docstring)
        with self._scratch_lock:
            self._scratch_locks[Path(name)] = fd
        return Path(name)

    def discard_scratch(self, path: Path) -> None:
        """Remove a scratch file the cache will not take."""
        path.unlink(missing_ok=True)
        self._release_scratch(path)

    def _release_scratch(self, path: Path) -> None:
        with self._scratch_lock:
            fd = self._scratch_locks.pop(path, None)
        if fd is not None:
            os.close(fd)

    def adopt(self, archive_id: str, start: int | None, path: Path, tree_hash: str | None = None) -> None:
        """Move verified bytes from ``path`` (beside the cache) into the cache, then
        make room. ``tree_hash`` is what they were verified against (hashed here if
        not given): every later open checks the file against it."""
        key = content_key(archive_id, start)
        try:
            if tree_hash is None:
                tree_hash = file_tree_hash(path)
            store = self._current()
            store.content.set(key, _Finished(path), read=True)
            path.unlink(missing_ok=True)  # copied, not moved, if it lay on another filesystem
        finally:
            self._release_scratch(path)
        handle = store.content.get(key, read=True)
        if handle is None:
            raise OSError(errno.ENOENT, "the cached file vanished as it was stored", key)
        with handle:
            size, inode, mtime_ns, ctime_ns = _looks(os.fstat(handle.fileno()))
        store.index.execute(
            "INSERT OR REPLACE INTO items (key, size, last_used, tree_hash, inode, mtime_ns, ctime_ns) "
            "VALUES (?,?,?,?,?,?,?)",
            (key, size, time.time(), tree_hash, inode, mtime_ns, ctime_ns),
        )
        self._evict(store, keep=key)

    def _evict(self, store: _Store, keep: str) -> None:
        """Least recently used first, one at a time, until the cache fits its limit."""
        while self.usage()[0] > self.size_limit:
            row = store.index.query_one("SELECT key FROM items WHERE key<>? ORDER BY last_used LIMIT 1", (keep,))
            if row is None:
                return  # only the newest is left: a cache may hold one archive over its limit
            self._forget(store, row[0])
            log.info("evicted %s from the cache", row[0][:16])

    def usage(self) -> tuple[int, int]:
        """(bytes, entries) held."""
        total, count = self._current().index.query_one("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM items")
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
                pwrite_all(self._fd, data, offset)
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
                log.error(
                    "the cache's copy of archive %s holds %d bytes, not %d: dropped", archive_id[:16], copied_size, size
                )
            elif (copied := file_tree_hash(path)) != tree_hash:
                log.error(
                    "the cache's copy of archive %s has tree hash %s, not Glacier's %s: dropped",
                    archive_id[:16],
                    copied,
                    tree_hash,
                )
            else:
                self._cache.adopt(archive_id, None, path, tree_hash)
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
            self._cache.discard_scratch(self.path)
            self.path = None


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """pwrite until every byte is written: a short write is not an error."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
