"""What `glacierfs export` knows between runs, and what it reads of the mount.

The mount owns its catalog: it holds the catalog's lock and the one writing
connection, and its schema changes with the mount. So the export reads the
catalog through a second, read-only SQLite connection (WAL lets a reader in
beside the writer) and keeps its own state in ``export-KEY.sqlite`` beside it:
one row per archive and destination (requested, verified, written; per
range for a large archive), every job it started, which is what pacing and
the mount's cost guard count (spending.py), and a running export's figures,
which `glacierfs status` reads. A killed
export loses nothing the mount needs, and a mount never waits on an export.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glacierfs import errors, lockfile
from glacierfs.catalog import DIRECTORY, EMPTY, IN_PROGRESS, SUCCEEDED, JobRecord, _job
from glacierfs.control import Attr
from glacierfs.spending import read_exports
from glacierfs.sqlitedb import LockedDatabase

# An archive's way through an export, in order.
PENDING = "pending"
REQUESTED = "requested"  # a job (started or reused) will bring it
DOWNLOADED = "downloaded"  # every byte is in the temporary file
VERIFIED = "verified"  # and they match the archive's tree hash
WRITTEN = "written"  # under its final name, with its time and mode
FAILED = "failed"  # see the message; a rerun tries again

SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    dest TEXT NOT NULL,
    vault TEXT NOT NULL,
    path TEXT NOT NULL,
    archive_id TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT,
    message TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (dest, vault, path)
);
CREATE TABLE IF NOT EXISTS export_jobs (
    job_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    archive_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    requested REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS export_jobs_by_time ON export_jobs (requested);
CREATE TABLE IF NOT EXISTS export_ranges (
    dest TEXT NOT NULL,
    vault TEXT NOT NULL,
    path TEXT NOT NULL,
    archive_id TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT,
    tree_hash TEXT,
    PRIMARY KEY (dest, vault, path, first)
);
CREATE TABLE IF NOT EXISTS progress (
    dest TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    figures TEXT NOT NULL
);
"""


def running_exports(mount: Path) -> list[dict[str, Any]]:
    """The exports running from the mount at ``mount`` (its root), as they last
    reported, for `glacierfs status`. Read-only, without the export's lock: a
    reader must never make an export starting at that moment think another runs."""
    try:
        catalog = Path(json.loads(os.getxattr(mount, Attr.SOURCE))["catalog"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    rows = read_exports(catalog, "SELECT dest, source, pid, started, updated, figures FROM progress")
    return [
        {"dest": dest, "source": source, "pid": pid, "started": started, "updated": updated, **json.loads(figures)}
        for dest, source, pid, started, updated, figures in rows
        if _is_export(pid)
    ]


def progress_line(figures: dict[str, Any], size_text: Callable[[float], str]) -> str:
    """One line of a running export's figures: its progress bar, and `glacierfs status`'s line."""
    fraction = figures["bytes_done"] / figures["bytes"] if figures["bytes"] else 1.0
    eta = figures["eta"]
    return (
        f"[{'#' * int(fraction * 20):<20}] {figures['files_done']}/{figures['files']} files, "
        f"{size_text(figures['bytes_done'])}/{size_text(figures['bytes'])}, jobs waiting {figures['jobs_waiting']}, "
        f"downloading {figures['downloading']}, paced {figures['paced']}, failed {figures['failed']}, "
        f"ETA {'-' if eta is None else f'{eta:.0f} s'}"
    )


def _is_export(pid: int) -> bool:
    """Whether ``pid`` is a running `glacierfs export` (a row a kill -9 left is not)."""
    try:
        return b"export" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


@dataclass(frozen=True)
class Item:
    """One thing under SOURCE, as the mount's catalog has it."""

    vault: str
    path: str  # in the vault
    kind: str
    size: int
    mtime_ns: int
    mode: int
    state: str
    archive_id: str | None
    tree_hash: str | None

    @property
    def is_dir(self) -> bool:
        return self.kind == DIRECTORY

    @property
    def is_empty_file(self) -> bool:
        return not self.is_dir and (self.state == EMPTY or self.size == 0)


class MountCatalog:
    """The running mount's catalog, read-only."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise errors.NotFound(f"the mount's catalog {path} does not exist")
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._db.execute("PRAGMA query_only=1")

    def close(self) -> None:
        self._db.close()

    def items(self, vault: str, prefix: str) -> Iterator[Item]:
        """Everything under ``prefix`` ('' for the whole vault), parents before children."""
        sql = "SELECT vault, path, kind, size, mtime_ns, mode, state, archive_id, tree_hash FROM entries WHERE vault=?"
        args: tuple[object, ...] = (vault,)
        if prefix:
            sql += " AND substr(path, 1, ?)=?"
            args += (len(prefix) + 1, prefix + "/")
        for row in self._db.execute(sql + " ORDER BY path", args):
            yield Item(*row)

    def jobs_since(self, since: float) -> list[tuple[str, float, int]]:
        """(job id, requested, bytes) of the jobs the mount started since ``since``: what its cost guard counts."""
        rows = self._db.execute(
            "SELECT job_id, requested, range_end - range_start + 1 FROM jobs WHERE requested>=?", (since,)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def live_jobs(self, archive_id: str) -> list[JobRecord]:
        """The mount's jobs for an archive that may still have output (Glacier's list decides)."""
        rows = self._db.execute(
            "SELECT job_id, vault, archive_id, range_start, range_end, whole, tier, requested, status, downloads, "
            "message, completed FROM jobs WHERE archive_id=? AND status IN (?, ?, 'Cached') ORDER BY requested",
            (archive_id, IN_PROGRESS, SUCCEEDED),
        )
        return [_job(row) for row in rows]


class ExportState:
    """``export-KEY.sqlite``: per archive and destination, how far it got; the jobs started."""

    def __init__(self, path: Path) -> None:
        self._store = LockedDatabase(path, SCHEMA)
        os.chmod(path, 0o600)
        lock = path.with_suffix(".lock")
        try:
            self._lock_fd = lockfile.hold(
                lock, lambda holder: f"another glacierfs export is running for this account (pid {holder}, {lock})"
            )
        except errors.Busy:
            self._store.close()
            raise

    def close(self) -> None:
        self._store.close()
        os.close(self._lock_fd)

    def row(self, dest: str, vault: str, path: str) -> tuple[str, str, str | None, str] | None:
        """(archive id, state, job id, message), if this export saw the path before."""
        found = self._store.query_one(
            "SELECT archive_id, state, job_id, message FROM exports WHERE dest=? AND vault=? AND path=?",
            (dest, vault, path),
        )
        return (found[0], found[1], found[2], found[3]) if found else None

    def set(
        self, dest: str, vault: str, path: str, archive_id: str, state: str, job_id: str | None, message: str = ""
    ) -> None:
        self._store.execute(
            "INSERT OR REPLACE INTO exports (dest, vault, path, archive_id, state, job_id, message, updated) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (dest, vault, path, archive_id, state, job_id, message[:500], time.time()),
        )

    def ranges(
        self, dest: str, vault: str, path: str, archive_id: str
    ) -> dict[int, tuple[int, str, str | None, str | None]]:
        """A large archive's ranges this export saw: first byte -> (last byte, state, job id, tree hash)."""
        rows = self._store.query(
            "SELECT first, last, state, job_id, tree_hash FROM export_ranges "
            "WHERE dest=? AND vault=? AND path=? AND archive_id=?",
            (dest, vault, path, archive_id),
        )
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}

    def set_range(
        self,
        dest: str,
        vault: str,
        path: str,
        archive_id: str,
        span: tuple[int, int],
        state: str,
        job_id: str | None,
        tree_hash: str | None = None,
    ) -> None:
        self._store.execute(
            "INSERT OR REPLACE INTO export_ranges (dest, vault, path, archive_id, first, last, state, job_id, "
            "tree_hash) VALUES (?,?,?,?,?,?,?,?,?)",
            (dest, vault, path, archive_id, span[0], span[1], state, job_id, tree_hash),
        )

    def forget_ranges(self, dest: str, vault: str, path: str) -> None:
        """The archive is written (or must start over): its ranges are no longer needed."""
        self._store.execute("DELETE FROM export_ranges WHERE dest=? AND vault=? AND path=?", (dest, vault, path))

    def add_job(self, job_id: str, vault: str, archive_id: str, tier: str, size: int, requested: float) -> None:
        self._store.execute(
            "INSERT OR REPLACE INTO export_jobs (job_id, vault, archive_id, tier, bytes, requested) "
            "VALUES (?,?,?,?,?,?)",
            (job_id, vault, archive_id, tier, size, requested),
        )

    def jobs_since(self, since: float) -> list[tuple[str, float, int]]:
        """(job id, requested, bytes) of the jobs this account's exports started since ``since``."""
        rows = self._store.query(
            "SELECT job_id, requested, bytes FROM export_jobs WHERE requested>=? ORDER BY requested", (since,)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def report(self, dest: str, source: str, started: float, figures: dict[str, Any]) -> None:
        """What this run has done so far, for `glacierfs status`."""
        self._store.execute(
            "INSERT OR REPLACE INTO progress (dest, source, pid, started, updated, figures) VALUES (?,?,?,?,?,?)",
            (dest, source, os.getpid(), started, time.time(), json.dumps(figures)),
        )

    def finished(self, dest: str) -> None:
        self._store.execute("DELETE FROM progress WHERE dest=?", (dest,))

    def counts(self, dest: str) -> dict[str, int]:
        rows = self._store.query("SELECT state, COUNT(*) FROM exports WHERE dest=? GROUP BY state", (dest,))
        return {row[0]: row[1] for row in rows}
