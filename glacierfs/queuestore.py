"""The upload queue's table in the catalog: files closed with ``--write-back``
whose bytes wait in the spool (spool.py) for their upload (writeback.py).

The queue lives in the catalog, not in memory, so a crash or a power cut
loses nothing: the next mount finds every row and sends it. A row follows its
file's name (catalog.rename moves it), and its entry says ``queued`` until the
archive is stored, which changes both in one transaction.

A row that was ``uploading`` when the mount died may or may not have reached
Glacier. It is written down as a doubt (the name its description gave, its
size and tree hash) and sent again under the name it has now; the archive
that replay stores is the one kept. The next inventory that lists another
archive matching the doubt, unknown to the catalog, has it deleted
(reconcile.py), and so does one after the file was removed or replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from glacierfs import timestamps
from glacierfs.catalog import QUEUED, STORED, Catalog, Entry

WAITING = "waiting"
UPLOADING = "uploading"
FAILED = "failed"

_COLUMNS = "spool_id, vault, path, size, queued, status, attempts, next_try, hurry, error, description, replaces"


@dataclass(frozen=True)
class QueuedFile:
    spool_id: str
    vault: str
    path: str
    size: int
    queued: float  # when it was closed: it waits for the settle time from then
    status: str = WAITING
    attempts: int = 0  # attempts that failed
    next_try: float = 0.0  # not before this (backoff after a failure)
    hurry: bool = False  # sent without waiting to settle (fsync, umount)
    error: str = ""  # why the last attempt failed
    description: str | None = None  # of the attempt under way (the name it had then)
    replaces: tuple[str, ...] = ()  # archive ids that go once this one is stored

    def but(self, **changes: object) -> QueuedFile:
        return replace(self, **changes)  # type: ignore[arg-type]


def _row(row: Any) -> QueuedFile:
    spool_id, vault, path, size, queued, status, attempts, next_try, hurry, error, description, replaces = row
    return QueuedFile(
        spool_id,
        vault,
        path,
        size,
        queued,
        status,
        attempts,
        next_try,
        bool(hurry),
        error,
        description,
        tuple(replaces.split()),
    )


class QueueStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[QueuedFile]:
        return [_row(row) for row in self.catalog.query(f"SELECT {_COLUMNS} FROM queue {where}", args)]

    def add(self, entry: Entry, item: QueuedFile) -> QueuedFile | None:
        """Queue a file and show its entry as queued, in one step. A file queued
        under that name before is replaced: its row goes, the archives it was
        to replace are this one's to replace, and it is returned (its spool
        file is the caller's to remove). Durable: close() has returned on it."""
        with self.catalog.transaction(durable=True) as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM queue WHERE vault=? AND path=?", (item.vault, item.path)
            ).fetchone()
            displaced = _row(found) if found else None
            replaces = list(item.replaces)
            if displaced is not None:
                db.execute("DELETE FROM queue WHERE spool_id=?", (displaced.spool_id,))
                replaces += [archive for archive in displaced.replaces if archive not in replaces]
            db.execute(
                f"INSERT INTO queue ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    item.spool_id,
                    item.vault,
                    item.path,
                    item.size,
                    item.queued,
                    item.status,
                    item.attempts,
                    item.next_try,
                    int(item.hurry),
                    item.error,
                    item.description,
                    " ".join(replaces),
                ),
            )
            self.catalog.put_in(db, entry.but(state=QUEUED, size=item.size, archive_id=None, tree_hash=None))
        return displaced

    def all(self) -> list[QueuedFile]:
        return self._select("ORDER BY queued")

    def get(self, spool_id: str) -> QueuedFile | None:
        found = self._select("WHERE spool_id=?", (spool_id,))
        return found[0] if found else None

    def at(self, vault: str, path: str) -> QueuedFile | None:
        found = self._select("WHERE vault=? AND path=?", (vault, path))
        return found[0] if found else None

    def claim_next(self, now: float, settle: float, describe: Any) -> QueuedFile | None:
        """The next file due, marked uploading, described (``describe(path)``)
        by the name it has now. Files under rsync's ``.~tmp~`` directory
        (--delay-updates) wait until they are moved out of it, or hurried."""
        with self.catalog.transaction() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM queue WHERE status!=? AND next_try<=? AND (hurry OR queued<=? "
                "AND '/' || path NOT LIKE '%/.~tmp~/%') ORDER BY queued LIMIT 1",
                (UPLOADING, now, now - settle),
            ).fetchone()
            if found is None:
                return None
            item = _row(found)
            description = describe(item.path)
            db.execute(
                "UPDATE queue SET status=?, description=? WHERE spool_id=?", (UPLOADING, description, item.spool_id)
            )
        return item.but(status=UPLOADING, description=description)

    def next_due(self, now: float, settle: float) -> float | None:
        """When the next file not being uploaded becomes due (one held in
        ``.~tmp~`` is looked at again in a second); None if there is none."""
        rows = self.catalog.query(
            "SELECT MIN(MAX(CASE WHEN hurry THEN 0 WHEN '/' || path LIKE '%/.~tmp~/%' THEN ? + 1 "
            "ELSE queued + ? END, next_try)) FROM queue WHERE status!=?",
            (now, settle, UPLOADING),
        )
        return rows[0][0]

    def hurry(self, spool_id: str | None = None) -> None:
        """Send it (or, None, every file queued) now: no settle time, no backoff."""
        where, args = ("WHERE spool_id=?", (spool_id,)) if spool_id else ("", ())
        self.catalog.execute(f"UPDATE queue SET hurry=1, next_try=0 {where}", args)

    def failed(self, spool_id: str, error: str, next_try: float) -> None:
        self.catalog.execute(
            "UPDATE queue SET status=?, attempts=attempts+1, error=?, next_try=?, description=NULL WHERE spool_id=?",
            (FAILED, error, next_try, spool_id),
        )

    def interrupted(self, spool_id: str) -> None:
        """Stopped before the attempt ended (an unmount): back to waiting, no failure counted."""
        self.catalog.execute("UPDATE queue SET status=?, description=NULL WHERE spool_id=?", (WAITING, spool_id))

    def interrupted_by_crash(self) -> list[QueuedFile]:
        """At mount: the rows a dead mount left uploading, back to waiting."""
        with self.catalog.transaction() as db:
            rows = [_row(row) for row in db.execute(f"SELECT {_COLUMNS} FROM queue WHERE status=?", (UPLOADING,))]
            db.execute("UPDATE queue SET status=?, description=NULL WHERE status=?", (WAITING, UPLOADING))
        return rows

    def doubt(self, item: QueuedFile, path: str, tree_hash: str) -> None:
        """An attempt the mount died during may have stored ``path`` (as its
        description named it) with these bytes."""
        self.catalog.execute(
            "INSERT OR IGNORE INTO doubts (spool_id, vault, path, size, tree_hash, since) VALUES (?,?,?,?,?,?)",
            (item.spool_id, item.vault, path, item.size, tree_hash, item.queued),
        )

    def settled(self, vault: str, keys: list[tuple[str, str]], older_than: float) -> None:
        """Forget doubts: those ``keys`` ((spool id, path)) whose copy is gone, and every
        doubt older than ``older_than``, which an inventory had time to show."""
        with self.catalog.transaction() as db:
            db.executemany("DELETE FROM doubts WHERE spool_id=? AND path=?", keys)
            db.execute("DELETE FROM doubts WHERE vault=? AND since<?", (vault, older_than))

    def stored(self, spool_id: str, archive_id: str, tree_hash: str) -> QueuedFile | None:
        """The archive is stored: its entry says so and its row goes, in one
        step. None if the file was removed or replaced while it uploaded."""
        with self.catalog.transaction() as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM queue WHERE spool_id=?", (spool_id,)).fetchone()
            if found is None:
                return None
            item = _row(found)
            db.execute("DELETE FROM queue WHERE spool_id=?", (spool_id,))
            db.execute(
                "UPDATE entries SET state=?, archive_id=?, tree_hash=?, created=?, size=? "
                "WHERE vault=? AND path=? AND state=?",
                (STORED, archive_id, tree_hash, timestamps.iso(time.time()), item.size, item.vault, item.path, QUEUED),
            )
            db.execute("UPDATE doubts SET kept=? WHERE spool_id=?", (archive_id, spool_id))
        return item

    def hand_over(self, vault: str, path: str, archive_ids: list[str]) -> bool:
        """The file queued under this name takes over ``archive_ids``, to retire
        once it is stored (it was renamed over their file); whether one is queued."""
        found = self.catalog.query(
            "UPDATE queue SET replaces=trim(replaces || ' ' || ?) WHERE vault=? AND path=? RETURNING spool_id",
            (" ".join(archive_ids), vault, path),
        )
        return bool(found)

    def remove_at(self, vault: str, path: str) -> QueuedFile | None:
        """Take the file queued under this name out of the queue (removed, or replaced)."""
        with self.catalog.transaction() as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM queue WHERE vault=? AND path=?", (vault, path)).fetchone()
            db.execute("DELETE FROM queue WHERE vault=? AND path=?", (vault, path))
        return _row(found) if found else None
