"""One SQLite connection shared by many threads behind one lock.

FUSE calls arrive on many threads, and so do the emulator's requests; short
statements under a lock serve both, with WAL so a crash never tears the file.
A full disk is the project's ``NoSpace`` (ENOSPC), not an unexpected error.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from glacierfs import errors


class LockedDatabase:
    def __init__(self, path: Path, schema: str, row_factory: Any = None, page_size: int | None = None) -> None:
        """``page_size`` applies to a database created here (it is fixed once in WAL mode)."""
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if row_factory is not None:
            self._db.row_factory = row_factory
        if page_size is not None:
            self._db.execute(f"PRAGMA page_size={int(page_size)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_column(self, table: str, column: str, declaration: str) -> None:
        """Give a database made by an earlier version a column added since."""
        with self._locked() as db:
            if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                    raise
                raise errors.NoSpace(f"the disk holding {self.path} is full: {error}") from error

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """``durable``: the commit survives a power cut too (WAL synced), for what
        a caller has already promised (a write-back close), at a sync's cost."""
        with self._locked() as db:
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._locked() as db:
            return db.execute(sql, args).fetchall()

    def query_one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._locked() as db:
            return db.execute(sql, args).fetchone()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._locked() as db:
            return db.execute(sql, args)
