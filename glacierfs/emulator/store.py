"""Where the emulator keeps its state: SQLite for metadata, one file per blob.

Everything lives under one directory, so ``--data-dir`` makes vaults, archives,
uploads and jobs survive a restart. Archive bodies never sit in memory: parts
are written at their offset into the upload's file, which becomes the archive
file by a rename on completion.

One Store serves the whole process (moto's backends are global too): the
emulator opens it at start, and every account's backend reaches it through
``current_store``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from glacierfs.sqlitedb import LockedDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS vaults (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    inventory_date REAL,
    inventory_count INTEGER,
    inventory_size INTEGER,
    UNIQUE (account, region, name)
);
CREATE TABLE IF NOT EXISTS archives (
    id TEXT PRIMARY KEY,
    vault_id INTEGER NOT NULL,
    description TEXT NOT NULL,
    size INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    created REAL NOT NULL,
    deleted REAL
);
CREATE INDEX IF NOT EXISTS archives_by_vault ON archives (vault_id, created);
-- An inventory is written a page at a time in (created, id) order (outputs.py).
CREATE INDEX IF NOT EXISTS archives_by_vault_created_id ON archives (vault_id, created, id);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    vault_id INTEGER NOT NULL,
    description TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    size INTEGER NOT NULL,
    tree_hash TEXT NOT NULL,
    PRIMARY KEY (upload_id, start)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    vault_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    archive_id TEXT,
    tier TEXT NOT NULL,
    format TEXT,
    range_start INTEGER,
    range_end INTEGER,
    description TEXT,
    created REAL NOT NULL,
    completes REAL NOT NULL,
    inventory_date REAL,
    output_size INTEGER,
    output_hash TEXT,
    sns_topic TEXT,
    inventory_params TEXT,
    next_marker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_vault ON jobs (vault_id, created);
CREATE INDEX IF NOT EXISTS jobs_by_archive ON jobs (archive_id);
CREATE TABLE IF NOT EXISTS tags (
    vault_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (vault_id, key)
);
CREATE TABLE IF NOT EXISTS vault_documents (
    vault_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault_id, kind)
);
CREATE TABLE IF NOT EXISTS vault_locks (
    vault_id INTEGER PRIMARY KEY,
    lock_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS retrieval_policies (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    strategy TEXT NOT NULL,
    bytes_per_hour INTEGER,
    PRIMARY KEY (account, region)
);
CREATE TABLE IF NOT EXISTS capacity_units (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    starts REAL NOT NULL,
    expires REAL NOT NULL
);
"""

# Columns a data directory written by an earlier emulator lacks.
ADDED_COLUMNS = [
    ("vaults", "inventory_date", "REAL"),
    ("vaults", "inventory_count", "INTEGER"),
    ("vaults", "inventory_size", "INTEGER"),
    ("jobs", "sns_topic", "TEXT"),
    ("jobs", "inventory_params", "TEXT"),
    ("jobs", "next_marker", "TEXT"),
    ("archives", "synthetic", "INTEGER"),  # seeded: zeros made on demand (synthetic.py)
]
# Every table, for a reset.
TABLES = (
    "vaults",
    "archives",
    "uploads",
    "parts",
    "jobs",
    "tags",
    "vault_documents",
    "vault_locks",
    "retrieval_policies",
    "capacity_units",
)


@dataclass(frozen=True)
class VaultRow:
    id: int
    name: str
    created: float


class Store(LockedDatabase):
    """Metadata in SQLite (thread-safe), blobs as files beside it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("archives", "uploads", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        super().__init__(self.root / "emulator.sqlite", SCHEMA, row_factory=sqlite3.Row)
        for table, column, declaration in ADDED_COLUMNS:
            self.add_column(table, column, declaration)

    # Blob files -----------------------------------------------------------

    def archive_path(self, archive_id: str) -> Path:
        return self.root / "archives" / archive_id

    def upload_path(self, upload_id: str) -> Path:
        return self.root / "uploads" / upload_id

    def job_output_path(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def write_at(self, path: Path, offset: int, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        finally:
            os.close(fd)

    def read_at(self, path: Path, offset: int, size: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_store: Store | None = None
_store_lock = threading.Lock()


def open_store(root: Path) -> Store:
    global _store
    with _store_lock:
        if _store is not None:
            _store.close()
        _store = Store(root)
        return _store


def close_store() -> None:
    global _store
    with _store_lock:
        if _store is not None:
            _store.close()
            _store = None


def current_store() -> Store:
    if _store is None:
        raise RuntimeError("the emulator's store is not open: start the emulator first")
    return _store
