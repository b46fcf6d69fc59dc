"""The local catalog: what is in each vault, by name, in SQLite.

Glacier lists nothing cheaply (an inventory is a job of hours), so every
listing is served from here and costs no request. Renames, times and modes
live only here: archives are immutable. It belongs in the state directory,
never the cache: losing it loses names.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from glacierfs import errors
from glacierfs.paths import name_of, parent_of
from glacierfs.sqlitedb import LockedDatabase

log = logging.getLogger(__name__)

FILE = "file"
DIRECTORY = "dir"

INITIATING = "?"  # uploads: a multipart upload asked for, its id not yet known
SESSION = uuid.uuid4().hex[:12]  # this process, in those rows: another's are a crash's

# Entry states, as user.glacier.state shows them.
EMPTY = "empty"  # a file of 0 bytes: Glacier refuses empty archives, so only the catalog has it
UPLOADING = "uploading"
STORED = "stored"
MISSING = "missing"  # a later inventory does not list it
QUEUED = "queued"  # closed with --write-back: in the spool, waiting for its upload (queuestore.py)

# Pages of a catalog created from now on: a million-archive inventory writes
# ~370 MiB of entries, and 16 KiB pages write them (and copy the WAL back) in
# about half the time 4 KiB pages take, 64 KiB pages in 0.4 s less again of
# 8.2 s end to end (scripts/bench_list.py). A mount's small writes and listings
# took no longer with them (bench_write.py's small files, bench_list.py's
# listings, side by side).
PAGE_SIZE = 65536

SCHEMA = """
CREATE TABLE IF NOT EXISTS vaults (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL DEFAULT '',
    gone REAL  -- when the vault went missing from ListVaults; NULL while listed
);
CREATE TABLE IF NOT EXISTS entries (
    vault TEXT NOT NULL,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    state TEXT NOT NULL,
    archive_id TEXT,
    tree_hash TEXT,
    created TEXT,
    PRIMARY KEY (vault, path)
) WITHOUT ROWID;  -- the primary key is the table: one B-tree less to write per entry
-- Serves both the filter and the order of a listing; on (vault, parent) alone
-- SQLite prefers walking the primary key to skip the sort: the whole vault.
DROP INDEX IF EXISTS entries_by_parent;
CREATE INDEX IF NOT EXISTS entries_in_directory ON entries (vault, parent, path);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    path TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    archive_id TEXT NOT NULL,
    range_start INTEGER NOT NULL,
    range_end INTEGER NOT NULL,
    whole INTEGER NOT NULL,
    tier TEXT NOT NULL,
    requested REAL NOT NULL,
    status TEXT NOT NULL,
    downloads INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    completed REAL  -- when Glacier finished it: its output lives 24 h from then
);
CREATE INDEX IF NOT EXISTS jobs_by_archive ON jobs (archive_id);
CREATE TABLE IF NOT EXISTS inventories (
    vault TEXT PRIMARY KEY,
    job_id TEXT,
    requested REAL,
    inventory_date REAL
);
CREATE TABLE IF NOT EXISTS deleted (
    archive_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    deleted REAL NOT NULL
);
-- Files written with --write-back, waiting in the spool for their upload (queuestore.py).
CREATE TABLE IF NOT EXISTS queue (
    spool_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    queued REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    hurry INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    description TEXT,
    replaces TEXT NOT NULL DEFAULT '',
    UNIQUE (vault, path)
);
CREATE INDEX IF NOT EXISTS queue_in_order ON queue (queued);
-- Uploads a crash cut short: Glacier may have stored them. The next inventory
-- deletes an archive that matches one (name, size, tree hash) unless it is the
-- one kept (the replay's), or one the catalog knows.
CREATE TABLE IF NOT EXISTS doubts (
    spool_id TEXT NOT NULL,
    vault TEXT NOT NULL,
    path TEXT NOT NULL,  -- as that attempt's description named it
    size INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    since REAL NOT NULL,  -- no archive of that attempt is older
    kept TEXT,  -- the archive its replay stored; NULL until then, or if it was removed
    PRIMARY KEY (spool_id, path)
);
CREATE TABLE IF NOT EXISTS manifests (
    archive_id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    tree_hash TEXT,
    applied INTEGER NOT NULL DEFAULT 0
);
"""


# Retrieval job states, as glacierfs follows them.
IN_PROGRESS = "InProgress"  # Glacier is preparing the output
SUCCEEDED = "Succeeded"  # the output is ready to download
CACHED = "Cached"  # downloaded, verified and put in the cache (which may have lost it since)
FAILED = "Failed"  # Glacier failed the job
EXPIRED = "Expired"  # the output is no longer downloadable
UNVERIFIED = "Unverified"  # its output failed verification: never served

JOB_LIFETIME = 24 * 3600  # a job's output stays downloadable at least this long after it completes


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    vault: str
    archive_id: str
    range_start: int
    range_end: int  # inclusive, as Glacier writes ranges
    whole: bool
    tier: str
    requested: float
    status: str
    downloads: int = 0  # downloads that failed verification
    message: str = ""
    completed: float | None = None  # when Glacier completed it, once known

    @property
    def size(self) -> int:
        return self.range_end - self.range_start + 1

    @property
    def output_expires(self) -> float:
        """When its output stops being downloadable, at the earliest (before it
        completes, counted from the request: the output cannot outlive that)."""
        return (self.completed or self.requested) + JOB_LIFETIME

    def but(self, **changes: object) -> JobRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


_JOB_COLUMNS = (
    "job_id, vault, archive_id, range_start, range_end, whole, tier, requested, status, downloads, message, completed"
)


@dataclass(frozen=True)
class Manifest:
    archive_id: str
    created: float
    size: int
    tree_hash: str | None
    applied: bool


@dataclass(frozen=True)
class Entry:
    vault: str
    path: str  # relative to the vault, '/'-separated, never empty
    kind: str
    size: int
    mtime_ns: int
    mode: int  # permission bits only
    uid: int
    gid: int
    state: str
    archive_id: str | None = None
    tree_hash: str | None = None
    created: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind == DIRECTORY

    @property
    def name(self) -> str:
        return name_of(self.path)

    def but(self, **changes: object) -> Entry:
        return replace(self, **changes)  # type: ignore[arg-type]


def new_entry(vault: str, path: str, kind: str, mode: int, mtime_ns: int | None = None) -> Entry:
    return Entry(
        vault=vault,
        path=path,
        kind=kind,
        size=0,
        mtime_ns=mtime_ns if mtime_ns is not None else time.time_ns(),
        mode=mode & 0o7777,
        uid=os.getuid(),
        gid=os.getgid(),
        state=EMPTY if kind == FILE else STORED,
    )


_COLUMNS = "vault, path, kind, size, mtime_ns, mode, uid, gid, state, archive_id, tree_hash, created"


_PUT = f"INSERT OR REPLACE INTO entries ({_COLUMNS}, parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


def _values(entry: Entry) -> tuple[object, ...]:
    return (
        entry.vault,
        entry.path,
        entry.kind,
        entry.size,
        entry.mtime_ns,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.state,
        entry.archive_id,
        entry.tree_hash,
        entry.created,
        parent_of(entry.path),
    )


def _job(row: Any) -> JobRecord:
    job_id, vault, archive_id, start, end, whole, tier, requested, status, downloads, message, completed = row
    return JobRecord(
        job_id, vault, archive_id, start, end, bool(whole), tier, requested, status, downloads, message, completed
    )


def _entry(row: Any) -> Entry:
    return Entry(*row)


class Catalog:
    """One SQLite connection behind one lock: FUSE calls come from many threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._store = LockedDatabase(path, SCHEMA, page_size=PAGE_SIZE)
        # A large inventory is written in one transaction (reconcile.py): a write here waits for it.
        self._store.execute("PRAGMA busy_timeout=120000")
        os.chmod(path, 0o600)
        # Catalogs from earlier versions gain the columns added since.
        self._store.add_column("vaults", "gone", "REAL")
        self._store.add_column("jobs", "completed", "REAL")

    def close(self) -> None:
        self._store.close()

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        return self._store.query(sql, args)

    def _execute(self, sql: str, args: tuple[object, ...] = ()) -> None:
        self._store.execute(sql, args)

    def transaction(self, durable: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """For the modules that keep a table of their own here (queuestore.py)."""
        return self._store.transaction(durable)

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        return self._all(sql, args)

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> None:
        self._execute(sql, args)

    # Vaults ---------------------------------------------------------------

    def vaults(self) -> list[str]:
        """The vaults ListVaults showed last; gone ones are hidden."""
        return [row[0] for row in self._all("SELECT name FROM vaults WHERE gone IS NULL ORDER BY name")]

    def has_vault(self, name: str) -> bool:
        return bool(self._all("SELECT 1 FROM vaults WHERE name=? AND gone IS NULL", (name,)))

    def gone_vaults(self) -> list[tuple[str, float, int]]:
        """(name, since, entries kept) of vaults missing from the last listing."""
        return [
            (row[0], row[1], row[2])
            for row in self._all(
                "SELECT name, gone, (SELECT COUNT(*) FROM entries WHERE vault=name) "
                "FROM vaults WHERE gone IS NOT NULL ORDER BY name"
            )
        ]

    def set_vaults(self, names: list[str]) -> None:
        """Make the listed vaults exactly ``names``. A vault missing from the list is
        marked gone, never forgotten: one listing may be wrong (other credentials, an
        eventually consistent answer), and its names live nowhere else."""
        now = time.time()
        with self._store.transaction() as db:
            rows = db.execute("SELECT name, gone FROM vaults").fetchall()
            listed = set(names)
            newly_gone = sorted(name for name, gone in rows if gone is None and name not in listed)
            back = sorted(name for name, gone in rows if gone is not None and name in listed)
            db.executemany("UPDATE vaults SET gone=? WHERE name=?", [(now, n) for n in newly_gone])
            db.executemany("UPDATE vaults SET gone=NULL WHERE name=?", [(n,) for n in back])
            db.executemany("INSERT OR IGNORE INTO vaults (name) VALUES (?)", [(n,) for n in names])
        for name in newly_gone:
            log.warning(
                "vault %s is missing from Glacier's vault list: hidden, its names kept "
                "until it is listed again (rmdir forgets it)",
                name,
            )
        for name in back:
            log.info("vault %s is listed again: its names are back", name)

    def add_vault(self, name: str) -> None:
        with self._store.transaction() as db:
            gone = db.execute("SELECT 1 FROM vaults WHERE name=? AND gone IS NOT NULL", (name,)).fetchone()
            db.execute("UPDATE vaults SET gone=NULL WHERE name=?", (name,))
            db.execute("INSERT OR IGNORE INTO vaults (name) VALUES (?)", (name,))
        if gone:
            log.info("vault %s, missing from Glacier's list before, is here again with its names", name)

    def remove_vault(self, name: str) -> None:
        """Forget a vault and its names: only for a vault deleted on purpose."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM vaults WHERE name=?", (name,))
            db.execute("DELETE FROM entries WHERE vault=?", (name,))

    # Entries --------------------------------------------------------------

    def get(self, vault: str, path: str) -> Entry | None:
        rows = self._all(f"SELECT {_COLUMNS} FROM entries WHERE vault=? AND path=?", (vault, path))
        return _entry(rows[0]) if rows else None

    def child_names(self, vault: str, parent: str) -> list[str]:
        """Names in a directory, from the index alone: what a listing needs."""
        start = len(parent) + 2 if parent else 1
        return [
            row[0]
            for row in self._all(
                "SELECT substr(path, ?) FROM entries WHERE vault=? AND parent=? ORDER BY path",
                (start, vault, parent),
            )
        ]

    def children(self, vault: str, parent: str, after: str = "", limit: int = 1024, skip: int = 0) -> list[Entry]:
        """A directory's entries in name order, a batch at a time: those whose path
        sorts after ``after`` (a batch's last path, so the index (vault, parent,
        path) seeks straight to the next batch), less the first ``skip``."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM entries WHERE vault=? AND parent=? AND path>? ORDER BY path LIMIT ? OFFSET ?",
            (vault, parent, after, limit, skip),
        )
        return [_entry(row) for row in rows]

    def has_children(self, vault: str, parent: str) -> bool:
        return bool(self._all("SELECT 1 FROM entries WHERE vault=? AND parent=? LIMIT 1", (vault, parent)))

    def vault_is_empty(self, vault: str) -> bool:
        return not self._all("SELECT 1 FROM entries WHERE vault=? LIMIT 1", (vault,))

    def put(self, entry: Entry) -> None:
        self._execute(_PUT, _values(entry))

    def put_in(self, db: sqlite3.Connection, entry: Entry) -> None:
        """``put`` inside a transaction of ``transaction()``."""
        db.execute(_PUT, _values(entry))

    def delete(self, vault: str, path: str) -> None:
        self._execute("DELETE FROM entries WHERE vault=? AND path=?", (vault, path))

    def rename(self, vault: str, old: str, new: str) -> None:
        """Move an entry, and everything under it if it is a directory."""
        with self._store.transaction() as db:
            if db.execute("SELECT 1 FROM entries WHERE vault=? AND path=?", (vault, old)).fetchone() is None:
                raise errors.NotFound(f"{vault}/{old}")
            db.execute("DELETE FROM entries WHERE vault=? AND path=?", (vault, new))
            db.execute(
                "UPDATE entries SET path=?, parent=? WHERE vault=? AND path=?",
                (new, parent_of(new), vault, old),
            )
            prefix = old + "/"
            rows = db.execute(
                "SELECT path FROM entries WHERE vault=? AND substr(path, 1, ?)=?",
                (vault, len(prefix), prefix),
            ).fetchall()
            for (path,) in rows:
                moved = new + path[len(old) :]
                db.execute(
                    "UPDATE entries SET path=?, parent=? WHERE vault=? AND path=?",
                    (moved, parent_of(moved), vault, path),
                )
            # Queued uploads go up under the name their file has when they start.
            db.execute(
                "UPDATE queue SET path=? || substr(path, ?) WHERE vault=? AND (path=? OR substr(path, 1, ?)=?)",
                (new, len(old) + 1, vault, old, len(prefix), prefix),
            )

    def drop_unfinished(self) -> list[Entry]:
        """Forget entries whose upload never completed (the mount died while
        writing them); the files they replaced, if any, kept their own rows."""
        with self._store.transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM entries WHERE state=?", (UPLOADING,)).fetchall()
            db.execute("DELETE FROM entries WHERE state=?", (UPLOADING,))
        return [_entry(row) for row in rows]

    def stored_totals(self) -> tuple[int, int]:
        """(bytes, files) stored across every vault, for statfs."""
        rows = self._all("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries WHERE kind='file'")
        return rows[0][0], rows[0][1]

    def vault_totals(self) -> dict[str, tuple[int, int]]:
        """(bytes, files) of each vault that has files: one pass over the entries,
        so callers keep the answer until ``version`` changes."""
        rows = self._all("SELECT vault, SUM(size), COUNT(*) FROM entries WHERE kind='file' GROUP BY vault")
        return {vault: (size, count) for vault, size, count in rows}

    def version(self) -> tuple[int, int]:
        """Changes as far as this connection can tell: rows it changed itself, and
        SQLite's data_version, which moves when another connection commits (an
        inventory applied by reconcile). Equal versions: nothing changed between."""
        row = self._store.query_one("SELECT total_changes(), data_version FROM pragma_data_version()")
        return row[0], row[1]

    # Multipart uploads in progress (so a crash leaves a trail) --------------

    def record_initiation(self, vault: str, path: str, part_size: int) -> str:
        """Before InitiateMultipartUpload: a crash before its answer is recorded
        leaves an upload whose id nobody knows. This row (``INITIATING`` and an id
        of this process's) lets the janitor find it by name and time."""
        placeholder = f"{INITIATING}{SESSION}:{uuid.uuid4().hex}"
        self.record_upload(placeholder, vault, path, part_size)
        return placeholder

    def record_upload(self, upload_id: str, vault: str, path: str, part_size: int, replacing: str = "") -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE upload_id=?", (replacing,))
            db.execute(
                "INSERT OR REPLACE INTO uploads (upload_id, vault, path, part_size, started) VALUES (?,?,?,?,?)",
                (upload_id, vault, path, part_size, time.time()),
            )

    def forget_upload(self, upload_id: str) -> None:
        self._execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

    def uploads(self) -> list[tuple[str, str, str, float]]:
        """(upload id, vault, path, started) of uploads not known to have ended."""
        return [tuple(row) for row in self._all("SELECT upload_id, vault, path, started FROM uploads")]

    # Retrieval jobs -----------------------------------------------------------

    def put_job(self, job: JobRecord) -> None:
        self._execute(
            f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                job.job_id,
                job.vault,
                job.archive_id,
                job.range_start,
                job.range_end,
                int(job.whole),
                job.tier,
                job.requested,
                job.status,
                job.downloads,
                job.message,
                job.completed,
            ),
        )

    def job(self, job_id: str) -> JobRecord | None:
        jobs = self._jobs("job_id=?", (job_id,))
        return jobs[0] if jobs else None

    def _jobs(self, where: str, args: tuple[object, ...]) -> list[JobRecord]:
        rows = self._all(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY requested", args)
        return [_job(row) for row in rows]

    def jobs_for(self, archive_id: str) -> list[JobRecord]:
        return self._jobs("archive_id=?", (archive_id,))

    def jobs_with_status(self, *statuses: str) -> list[JobRecord]:
        marks = ",".join("?" * len(statuses))
        return self._jobs(f"status IN ({marks})", statuses)

    def jobs_since(self, since: float) -> list[JobRecord]:
        return self._jobs("requested>=?", (since,))

    # Inventories, deletions, manifests ----------------------------------------

    def inventory(self, vault: str) -> tuple[str | None, float | None, float | None] | None:
        """(pending job id, requested, date of the last inventory applied), or None if never asked."""
        rows = self._all("SELECT job_id, requested, inventory_date FROM inventories WHERE vault=?", (vault,))
        return tuple(rows[0]) if rows else None

    def set_inventory(
        self, vault: str, job_id: str | None, requested: float | None, inventory_date: float | None
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO inventories (vault, job_id, requested, inventory_date) VALUES (?,?,?,?)",
            (vault, job_id, requested, inventory_date),
        )

    def pending_inventories(self) -> list[tuple[str, str]]:
        """(vault, job id) of inventory jobs not yet applied."""
        return [tuple(r) for r in self._all("SELECT vault, job_id FROM inventories WHERE job_id IS NOT NULL")]

    def record_deleted(self, vault: str, archive_id: str) -> None:
        """Remember an archive glacierfs deleted: inventories keep listing it for a while."""
        self._execute(
            "INSERT OR REPLACE INTO deleted (archive_id, vault, deleted) VALUES (?,?,?)",
            (archive_id, vault, time.time()),
        )

    def forget_deleted(self, vault: str, archive_id: str) -> None:
        """Glacier did not delete it after all (a vault lock, an outage): inventories may list it again."""
        self._execute("DELETE FROM deleted WHERE archive_id=? AND vault=?", (archive_id, vault))

    def deleted_ids(self, vault: str) -> set[str]:
        return {row[0] for row in self._all("SELECT archive_id FROM deleted WHERE vault=?", (vault,))}

    def archive_paths(self, vault: str) -> dict[str, Entry]:
        return {
            entry.archive_id: entry
            for entry in (
                _entry(row)
                for row in self._all(
                    f"SELECT {_COLUMNS} FROM entries WHERE vault=? AND archive_id IS NOT NULL", (vault,)
                )
            )
            if entry.archive_id
        }

    def kinds(self, vault: str) -> dict[str, str]:
        """Every path of the vault and whether it is a file or a directory."""
        return {row[0]: row[1] for row in self._all("SELECT path, kind FROM entries WHERE vault=?", (vault,))}

    def entries(self, vault: str) -> list[Entry]:
        return [
            _entry(row) for row in self._all(f"SELECT {_COLUMNS} FROM entries WHERE vault=? ORDER BY path", (vault,))
        ]

    def put_many(self, entries: list[Entry]) -> None:
        with self._store.transaction() as db:
            db.executemany(_PUT, [_values(entry) for entry in entries])

    def add_manifest(
        self, vault: str, archive_id: str, created: float, size: int, tree_hash: str | None, applied: bool = False
    ) -> None:
        self._execute(
            "INSERT OR IGNORE INTO manifests (archive_id, vault, created, size, tree_hash, applied) "
            "VALUES (?,?,?,?,?,?)",
            (archive_id, vault, created, size, tree_hash, int(applied)),
        )

    def manifests(self, vault: str) -> list[Manifest]:
        """The vault's manifests, oldest first."""
        rows = self._all(
            "SELECT archive_id, created, size, tree_hash, applied FROM manifests WHERE vault=? ORDER BY created",
            (vault,),
        )
        return [Manifest(row[0], row[1], row[2], row[3], bool(row[4])) for row in rows]

    def mark_manifest_applied(self, archive_id: str) -> None:
        self._execute("UPDATE manifests SET applied=1 WHERE archive_id=?", (archive_id,))

    def forget_manifest(self, archive_id: str) -> None:
        self._execute("DELETE FROM manifests WHERE archive_id=?", (archive_id,))


class UploadTrail:
    """One multipart upload's row in ``uploads`` (writer.Trail): a placeholder
    while it is asked for, its id once Glacier answers, nothing once it ends."""

    def __init__(self, catalog: Catalog, vault: str, path: str, part_size: int) -> None:
        self.catalog = catalog
        self.vault = vault
        self.path = path
        self.part_size = part_size
        self._placeholder = ""

    def starting(self) -> None:
        self._placeholder = self.catalog.record_initiation(self.vault, self.path, self.part_size)

    def started(self, upload_id: str) -> None:
        self.catalog.record_upload(upload_id, self.vault, self.path, self.part_size, replacing=self._placeholder)

    def ended(self, upload_id: str) -> None:
        self.catalog.forget_upload(upload_id)
