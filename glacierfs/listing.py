"""Directory listings a batch at a time, each name with its attributes.

The kernel's READDIRPLUS takes every entry's attributes with its name, so a
first `ls -l` costs no lookup per entry; fs.py hands them over. A directory of
a million archives is read from the catalog one batch at a time, each resumed
after the last path of the one before (the index on (vault, parent, path) seeks
straight there), so memory holds one batch, never the directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BATCH = 1024  # entries fetched at once: a few READDIRPLUS replies' worth


@dataclass(frozen=True)
class Stat:
    kind: str
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int


Named = list[tuple[str, Stat]]
# fetch(after, limit, skip): up to ``limit`` entries whose key sorts after
# ``after``, less the first ``skip``; and the last one's key.
Fetch = Callable[[str, int, int], tuple[Named, str]]


class DirectoryListing:
    """One open directory, from opendir to releasedir: its entries by position.

    libfuse asks for a directory's entries from an offset, serially for one open
    directory; the next request usually starts where the last reply ended, inside
    the batch held or right after it. Any other position (rewinddir, seekdir) is
    counted from the start.
    """

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._start = 0  # the position of the batch's first entry
        self._batch: Named = []
        self._last = ""  # the key of the batch's last entry
        self._fetched = False

    @classmethod
    def of(cls, entries: Named) -> DirectoryListing:
        """A listing of a few entries known at once (the vaults at the root)."""

        def fetch(after: str, limit: int, skip: int) -> tuple[Named, str]:
            rest = [item for item in entries if item[0] > after][skip : skip + limit]
            return rest, rest[-1][0] if rest else after

        return cls(fetch)

    def batch_from(self, position: int) -> Named:
        """The entries from ``position`` (0: the first) to the end of a batch; [] past the last."""
        end = self._start + len(self._batch)
        if not (self._start <= position < end):
            if self._fetched and position == end:
                if len(self._batch) < BATCH:
                    return []  # the last batch was short: nothing follows it
                self._batch, self._last = self._fetch(self._last, BATCH, 0)
            else:
                self._batch, self._last = self._fetch("", BATCH, position)
            self._start = position
            self._fetched = True
        return self._batch[position - self._start :]
