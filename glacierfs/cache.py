"""Retrieved content on local disk, in diskcache, least recently used first out.

Only verified bytes are put here. Readers get an open file and read by offset,
so no archive is loaded into memory; a reader keeps its file open, so an
archive that is open stays readable even if eviction takes its entry (its
space comes back when the last reader closes it).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import diskcache

log = logging.getLogger(__name__)


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
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            disk_min_file_size=0,  # every value is a file: read by offset, never whole
        )
        self._scratch = directory / "incoming"
        self._scratch.mkdir(exist_ok=True, mode=0o700)

    def close(self) -> None:
        self._cache.close()

    def open(self, archive_id: str, start: int | None = None) -> BinaryIO | None:
        """An open file of the cached bytes, or None. Counts as a use for LRU."""
        handle = self._cache.get(content_key(archive_id, start), read=True)
        return handle  # type: ignore[no-any-return]

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def has(self, archive_id: str, start: int | None = None) -> bool:
        return content_key(archive_id, start) in self._cache

    def scratch_file(self) -> Path:
        """A new empty file beside the cache, for a download in progress."""
        fd, name = tempfile.mkstemp(dir=self._scratch, prefix="download-")
        os.close(fd)
        return Path(name)

    def adopt(self, archive_id: str, start: int | None, path: Path) -> None:
        """Move verified bytes from ``path`` into the cache (may evict others)."""
        with open(path, "rb") as source:
            self._cache.set(content_key(archive_id, start), source, read=True)
        path.unlink()

    def usage(self) -> tuple[int, int]:
        """(bytes, entries) held."""
        return self._cache.volume(), len(self._cache)
