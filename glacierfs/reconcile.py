"""Applying an inventory to the catalog as set operations in SQLite.

A vault of millions of archives does not fit in a dict. The inventory's rows
are staged, a batch at a time, in a temporary table of a connection of our own
to the catalog file, and SQL decides the rest: which archives are new, known or
gone; which name each new one gets (the newest of a name takes it, older ones a
``.older-STAMP-ID8`` suffix, and an archive whose name cannot be had goes to
``_unnamed/ID``); which directories hold them; which entries a later inventory
no longer lists (``missing``). Python's memory does not grow with the vault.

The placement is worked out in temporary tables under a read snapshot, so the
mount's own connection keeps serving listings of the old tree (WAL readers),
and written in one transaction: the new tree appears whole, at its commit. If
the mount changed the catalog in between (``PRAGMA data_version``), the
placement is worked out again inside that transaction.

New archives are sorted once, by the name they want and newest first; each
row's predecessor in that order tells whether it is an older namesake (or the
same archive listed twice), and names are taken in that order, so the
catalog's indexes grow by appending. Only the exceptions (older namesakes,
taken names, names under a file, no name) are worked out, in a small table of
their own. (A window function ranked the namesakes at first: it cost twice the
sort it needs.)

This module knows the ``entries``, ``deleted`` and ``manifests`` tables of
catalog.py and writes them directly: a Python object per row is what made a
million archives take minutes.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from glacierfs import errors, inventoryfile, manifest, names, timestamps
from glacierfs.catalog import DIRECTORY, FILE, MISSING, STORED
from glacierfs.paths import parent_of

log = logging.getLogger(__name__)

UNNAMED = "_unnamed"  # archives whose description names nothing, by archive id
LAG_GRACE = 2 * 24 * 3600  # an inventory describes the vault up to two days earlier
BATCH = 5_000  # rows staged per statement
PARALLEL_MIN = 64 << 20  # inventories from this size (about 160,000 archives) are staged in two processes
SHOWN = 20  # entries named one by one in the log; the rest are counted

_STAGE = """
CREATE TEMP TABLE staged (
    archive_id TEXT NOT NULL,
    wanted TEXT,            -- the path the description names; NULL: none usable
    parent TEXT,            -- parent_of(wanted)
    created_text TEXT,      -- CreationDate as the inventory writes it
    mtime REAL,             -- from the description, when it records one
    size INTEGER NOT NULL,
    tree_hash TEXT
);
CREATE TEMP TABLE staged_manifests (archive_id TEXT, created_text TEXT, size INTEGER, tree_hash TEXT);
"""
_INSERT = "INSERT INTO staged VALUES (?,?,?,?,?,?,?)"
_ENTRY_COLUMNS = "vault, path, parent, kind, size, mtime_ns, mode, uid, gid, state, archive_id, tree_hash, created"


def _quiet(count: int) -> None:
    """A progress callback that shows nothing."""


@dataclass(frozen=True)
class Copy:
    archive_id: str
    spool_id: str  # the doubt it settles (queuestore.py)
    path: str


@dataclass(frozen=True)
class Outcome:
    listed: int  # archives the inventory lists
    added: int  # new files in the tree
    flagged: int  # entries newly missing
    back: int  # missing entries listed again
    copies: tuple[Copy, ...] = ()  # archives a crash-cut upload may have stored besides the one kept


class Reconciler:
    """One application of one inventory to one vault, on its own connection."""

    def __init__(self, catalog_path: Path, vault: str, dated: float) -> None:
        self.vault = vault
        self.dated = dated
        self.now = time.time()
        self.db = sqlite3.connect(catalog_path, isolation_level=None, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA temp_store=FILE")  # sorts of millions of rows spill to disk, not RAM
        self.db.execute("PRAGMA cache_size=-8192")  # 8 MiB per database, whatever the vault's size
        # Sorts of millions of rows (new names, known ids) take a second core when there is one.
        self.db.execute(f"PRAGMA threads={1 if (os.cpu_count() or 1) > 1 else 0}")
        self.db.execute("PRAGMA synchronous=NORMAL")  # as the catalog's own connection (sqlitedb.py)
        # The write of a large inventory leaves a large WAL: this connection copies it
        # back (apply) rather than the mount's next small write.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.create_function("parent_of", 1, parent_of, deterministic=True)
        self.db.create_function("parse_iso", 1, _parse_iso, deterministic=True)
        self.db.create_function("compact_iso", 1, _compact_iso, deterministic=True)
        self.db.executescript(_STAGE)
        self._staged_index = False
        self._new_count = 0

    def close(self) -> None:
        self.db.close()

    # Staging ------------------------------------------------------------------

    def stage(self, archives: Iterable[dict[str, Any]], progress: Callable[[int], None] = _quiet) -> int:
        """Copy the inventory's archives into the staging table; how many had an id."""
        return _stage_into(self.db, archives, progress)

    def stage_file(self, path: Path, progress: Callable[[int], None] = _quiet) -> int:
        """Stage the inventory in ``path``: a large JSON one in two halves at once
        when a core is spare, the second by a process of its own (the Python work
        per archive is what costs), into a scratch database copied in at the end.
        Measured on 2 cores: 200,000 archives staged in 1.45 s instead of 1.91 s
        with the other core mostly free; no gain with it busy."""
        runs = inventoryfile.split(path, 2) if _parallel(path) else None
        if runs is None:
            return self.stage(inventoryfile.iter_archives(path), progress)
        fd, name = tempfile.mkstemp(prefix="staging-", suffix=".sqlite", dir=path.parent)
        os.close(fd)
        scratch = Path(name)
        worker = _start_worker(path, *runs[1], scratch)
        try:
            try:
                count = self.stage(inventoryfile.iter_archive_range(path, *runs[0]), lambda n: progress(n * 2))
            except BaseException:
                worker.kill()  # stopping, or this half failed: the other half is not wanted
                raise
            report, problem = worker.communicate()
            if worker.returncode:
                raise errors.InvalidRequest(problem.strip().splitlines()[-1] if problem.strip() else "it failed")
            self.db.execute("ATTACH DATABASE ? AS run", (str(scratch),))
            try:
                self.db.execute("BEGIN")
                count_other = self.db.execute("INSERT INTO temp.staged SELECT * FROM run.staged").rowcount
                count_other += self.db.execute(
                    "INSERT INTO temp.staged_manifests SELECT * FROM run.staged_manifests"
                ).rowcount
                self.db.execute("COMMIT")
            finally:
                self.db.execute("DETACH DATABASE run")
            log.info(
                "half of the inventory of vault %s was staged by a process of its own (%s)", self.vault, report.strip()
            )
        except errors.InvalidRequest as error:
            log.warning("the inventory could not be read in halves (%s): reading it whole", error)
            self.db.execute("DELETE FROM temp.staged")
            self.db.execute("DELETE FROM temp.staged_manifests")
            return self.stage(inventoryfile.iter_archives(path), progress)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            scratch.unlink(missing_ok=True)
        progress(count + count_other)
        return count + count_other

    # Applying -----------------------------------------------------------------

    def apply(self) -> Outcome:
        """Work out the placement under a snapshot, then write it in one transaction."""
        copies = self._copies()
        self.db.execute("BEGIN")
        try:
            seen = self._data_version()
            self._place()
        finally:
            self.db.execute("COMMIT")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self._data_version() != seen:
                log.info("the catalog of vault %s changed while its inventory was placed: placing it again", self.vault)
                self._place()
            outcome = self._write()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # readers are not waited for, nor blocked
        return replace(outcome, copies=copies)

    def _copies(self) -> tuple[Copy, ...]:
        """Leave out of the tree what write-back uploads own (queuestore.py):
        archives a queued file will retire once stored, and copies an upload a
        crash cut short may have stored (same name, size and tree hash as a
        doubt; not the archive its replay stored, nor one the catalog knows).
        The copies are returned: the caller deletes them from Glacier."""
        db, vault = self.db, self.vault
        replaced = [
            (archive,)
            for (text,) in db.execute("SELECT replaces FROM main.queue WHERE vault=? AND replaces!=''", (vault,))
            for archive in text.split()
        ]
        db.executemany("DELETE FROM staged WHERE archive_id=?", replaced)
        if not db.execute("SELECT 1 FROM main.doubts WHERE vault=? LIMIT 1", (vault,)).fetchone():
            return ()
        found = db.execute(
            """SELECT s.archive_id, d.spool_id, d.path FROM staged s JOIN main.doubts d
            ON d.vault=? AND s.wanted=d.path AND s.size=d.size AND s.tree_hash=d.tree_hash
            AND s.archive_id IS NOT d.kept AND parse_iso(s.created_text) >= d.since - 60
            WHERE NOT EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.archive_id=s.archive_id)""",
            (vault, vault),
        ).fetchall()
        db.executemany("DELETE FROM staged WHERE archive_id=?", [(copy,) for copy, _, _ in found])
        return tuple(Copy(*row) for row in found)

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA main.data_version").fetchone()[0])

    def _place(self) -> None:
        """temp.new: the new archives in the order of their names; temp.moved: those
        that do not get the name they want, and the path they get; temp.dirs:
        the directories the catalog lacks for them."""
        db, vault = self.db, self.vault
        for table in ("known", "new", "up", "blocked", "moved", "dirs"):
            db.execute(f"DROP TABLE IF EXISTS temp.{table}")
        # Keyed by id: one sorted write instead of a copy and then an index of it.
        db.execute(
            """CREATE TEMP TABLE known (archive_id TEXT NOT NULL, path TEXT NOT NULL, state TEXT, created TEXT,
            PRIMARY KEY (archive_id, path)) WITHOUT ROWID"""
        )
        db.execute(
            """INSERT INTO known SELECT archive_id, path, state, created FROM main.entries
            WHERE vault=? AND archive_id IS NOT NULL ORDER BY archive_id, path""",
            (vault,),
        )
        # The archives the catalog does not know (nor deleted), sorted once: by the
        # name they want, the newest of a name first. Row n-1 then tells row n
        # whether it is an older namesake, or the same archive listed twice.
        db.execute(
            """CREATE TEMP TABLE new AS SELECT s.* FROM staged s
            WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.archive_id = s.archive_id)
              AND NOT EXISTS (SELECT 1 FROM main.deleted d WHERE d.archive_id = s.archive_id)
            ORDER BY s.wanted, s.created_text DESC, s.archive_id"""
        )
        self._new_count = db.execute("SELECT COALESCE(max(rowid), 0) FROM new").fetchone()[0]  # rowids 1..n
        # A name under a file cannot be had. Every directory a new name needs, with
        # each of its ancestors; those with an ancestor that is a file (in the
        # catalog, or a name a new archive wants and the catalog lacks) are blocked.
        db.execute(
            """CREATE TEMP TABLE up AS WITH RECURSIVE up(dir, ancestor) AS (
                SELECT DISTINCT parent, parent FROM new WHERE parent != ''
                UNION
                SELECT dir, parent_of(ancestor) FROM up WHERE parent_of(ancestor) != ''
            ) SELECT dir, ancestor FROM up"""
        )
        db.execute("CREATE INDEX temp.up_by_ancestor ON up (ancestor)")
        db.execute(
            """CREATE TEMP TABLE blocked AS SELECT DISTINCT dir FROM up WHERE ancestor IN (
                SELECT path FROM main.entries WHERE vault=? AND kind=? AND path IN (SELECT ancestor FROM up)
                UNION
                SELECT wanted FROM new WHERE wanted IN (SELECT ancestor FROM up)
                  AND NOT EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=new.wanted))""",
            (vault, FILE, vault),
        )
        # The exceptions: an older archive of a name, or one whose name is taken,
        # gets the suffix; one without a name, or under a file, goes to _unnamed.
        db.execute("CREATE TEMP TABLE moved (id INTEGER PRIMARY KEY, final TEXT, parent TEXT, skip INTEGER NOT NULL)")
        db.execute(
            """INSERT INTO moved (id, final, parent, skip)
            SELECT n.rowid,
                CASE WHEN n.wanted IS NULL OR n.parent IN (SELECT dir FROM blocked) THEN NULL
                     ELSE n.wanted || '.older-' || compact_iso(n.created_text) || '-' || substr(n.archive_id, 1, 8)
                END,
                n.parent,
                p.archive_id IS n.archive_id
            FROM new n LEFT JOIN new p ON p.rowid = n.rowid - 1
            WHERE n.wanted IS NULL OR p.wanted IS n.wanted OR n.parent IN (SELECT dir FROM blocked)
               OR EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=n.wanted)""",
            (vault,),
        )
        db.execute("CREATE INDEX temp.moved_by_final ON moved (final)")
        # A suffixed name that is taken as well (by the catalog, a name a new
        # archive wants, or an earlier suffixed one) goes to _unnamed too.
        db.execute(
            """UPDATE moved SET final = NULL
            WHERE final IS NOT NULL AND (
                EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=moved.final)
                OR final IN (SELECT wanted FROM new WHERE wanted IN (SELECT final FROM moved))
                OR EXISTS (SELECT 1 FROM moved m WHERE m.final = moved.final AND m.id < moved.id))""",
            (vault,),
        )
        self._unnamed()
        # A suffixed or unnamed path may still be a directory another new name
        # needs (a name holding '.older-' or '_unnamed-2/'): what is under it moves.
        db.execute("CREATE TEMP TABLE dirs (dir TEXT PRIMARY KEY) WITHOUT ROWID")
        for _ in range(8):
            self._directories()
            clashes = [row[0] for row in db.execute("SELECT final FROM moved WHERE final IN (SELECT dir FROM dirs)")]
            if not clashes:
                break
            log.warning("%d new path(s) of vault %s are directories of other new names", len(clashes), vault)
            for clash in clashes:
                db.execute(
                    """INSERT OR IGNORE INTO moved (id, final, parent, skip)
                    SELECT rowid, NULL, parent, 0 FROM new WHERE parent = ? OR substr(parent, 1, ?) = ?""",
                    (clash, len(clash) + 1, clash + "/"),
                )
                db.execute(
                    "UPDATE moved SET final = NULL WHERE parent = ? OR substr(parent, 1, ?) = ?",
                    (clash, len(clash) + 1, clash + "/"),
                )
            self._unnamed()

    def _unnamed(self) -> None:
        """Archives without a usable name: _unnamed/ID, or _unnamed-2/ID, ... where
        _unnamed is a file (the user's own, or a new archive's name)."""
        db, vault = self.db, self.vault
        number = 1
        while db.execute("SELECT 1 FROM moved WHERE final IS NULL AND NOT skip LIMIT 1").fetchone():
            folder = UNNAMED if number == 1 else f"{UNNAMED}-{number}"
            number += 1
            is_file = db.execute(
                """SELECT EXISTS (SELECT 1 FROM main.entries WHERE vault=? AND path=? AND kind=?)
                    OR EXISTS (SELECT 1 FROM moved WHERE final=?)
                    OR EXISTS (SELECT 1 FROM new WHERE wanted=? AND rowid NOT IN (SELECT id FROM moved))""",
                (vault, folder, FILE, folder, folder),
            ).fetchone()[0]
            if is_file:
                continue
            db.execute(
                """UPDATE moved SET final = ? || '/' || (SELECT archive_id FROM new WHERE new.rowid = moved.id),
                    parent = ?
                WHERE final IS NULL AND NOT skip AND NOT EXISTS (
                    SELECT 1 FROM main.entries e, new n
                    WHERE n.rowid = moved.id AND e.vault=? AND e.path = ? || '/' || n.archive_id)""",
                (folder, folder, vault, folder),
            )

    def _directories(self) -> None:
        """temp.dirs: the directories the new files need that the catalog lacks."""
        self.db.execute("DELETE FROM dirs")
        self.db.execute(
            """INSERT INTO dirs WITH RECURSIVE up(dir) AS (
                SELECT DISTINCT parent FROM new WHERE rowid NOT IN (SELECT id FROM moved) AND parent != ''
                UNION
                SELECT parent FROM moved WHERE NOT skip AND parent IS NOT NULL AND parent != ''
                UNION
                SELECT parent_of(dir) FROM up WHERE parent_of(dir) != ''
            )
            SELECT dir FROM up WHERE NOT EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=up.dir)""",
            (self.vault,),
        )

    def _write(self) -> Outcome:
        db, vault = self.db, self.vault
        common = (os.getuid(), os.getgid(), STORED)
        db.execute(
            f"""INSERT INTO main.entries ({_ENTRY_COLUMNS})
            SELECT ?, dir, parent_of(dir), ?, 0, ?, ?, ?, ?, ?, NULL, NULL, NULL FROM dirs ORDER BY dir""",
            (vault, DIRECTORY, int(self.now * 1e9), 0o755, *common),
        )
        added = db.execute(
            f"""INSERT INTO main.entries ({_ENTRY_COLUMNS})
            SELECT ?, COALESCE(m.final, n.wanted), COALESCE(m.parent, n.parent), ?, n.size,
                   CAST(COALESCE(NULLIF(n.mtime, 0), NULLIF(parse_iso(n.created_text), 0), ?) * 1e9 AS INTEGER),
                   ?, ?, ?, ?, n.archive_id, n.tree_hash, n.created_text
            FROM new n LEFT JOIN moved m ON m.id = n.rowid WHERE m.skip IS NOT 1 ORDER BY n.rowid""",
            (vault, FILE, self.now, 0o644, *common),
        ).rowcount
        self._log_unnamed()
        db.execute(
            """INSERT OR IGNORE INTO main.manifests (archive_id, vault, created, size, tree_hash, applied)
            SELECT archive_id, ?, COALESCE(parse_iso(created_text), 0), size, tree_hash, 0 FROM staged_manifests s
            WHERE NOT EXISTS (SELECT 1 FROM main.deleted d WHERE d.archive_id = s.archive_id)""",
            (vault,),
        )
        flagged, back = self._flags()
        listed = db.execute("SELECT count(*) FROM staged").fetchone()[0]
        listed += db.execute("SELECT count(*) FROM staged_manifests").fetchone()[0]
        return Outcome(listed, added, flagged, back)

    def _log_unnamed(self) -> None:
        moved = self.db.execute(
            """SELECT m.parent, count(*) FROM moved m JOIN new n ON n.rowid = m.id
            WHERE n.wanted IS NULL AND NOT m.skip AND m.parent != ? GROUP BY 1""",
            (UNNAMED,),
        ).fetchall()
        for folder, count in moved:
            log.warning(
                "vault %s holds a file named %s, so %d archive(s) without a usable name are in %s/",
                self.vault,
                UNNAMED,
                count,
                folder,
            )

    def _flags(self) -> tuple[int, int]:
        """Entries an inventory taken well after their upload does not list are
        flagged missing, never dropped; missing ones it lists again are back."""
        db, vault = self.db, self.vault
        known = db.execute("SELECT count(*), count(*) FILTER (WHERE state=?) FROM known", (MISSING,)).fetchone()
        # Staged rows of known archives: those neither new nor deleted (counted without a probe per row).
        listed = db.execute("SELECT count(*) FROM staged").fetchone()[0] - self._new_count
        if db.execute("SELECT 1 FROM main.deleted LIMIT 1").fetchone():
            listed -= db.execute(
                """SELECT count(*) FROM staged s WHERE s.archive_id IN (SELECT archive_id FROM main.deleted)
                AND NOT EXISTS (SELECT 1 FROM known k WHERE k.archive_id = s.archive_id)"""
            ).fetchone()[0]
        if listed == known[0] and not known[1]:  # every known archive is listed, and none was missing
            return 0, 0
        if not self._staged_index:
            db.execute("CREATE INDEX temp.staged_by_id ON staged (archive_id)")
            self._staged_index = True
        back = db.execute(
            """UPDATE main.entries SET state=? WHERE vault=? AND path IN (
                SELECT path FROM known k WHERE k.state=?
                  AND EXISTS (SELECT 1 FROM staged s WHERE s.archive_id = k.archive_id))""",
            (STORED, vault, MISSING),
        ).rowcount
        if back:
            log.info("%d entr(ies) of vault %s missing from an earlier inventory are listed again", back, vault)
        db.execute("DROP TABLE IF EXISTS temp.gone")
        db.execute(
            """CREATE TEMP TABLE gone AS SELECT path, archive_id FROM known k
            WHERE k.state=? AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.archive_id = k.archive_id)
              AND COALESCE(parse_iso(k.created), 0) BETWEEN 1 AND ?""",
            (STORED, self.dated - LAG_GRACE),
        )
        for path, archive_id in db.execute(f"SELECT path, archive_id FROM gone ORDER BY path LIMIT {SHOWN}"):
            log.warning(
                "%s/%s (archive %s) is missing from an inventory taken well after its upload",
                vault,
                path,
                archive_id[:16],
            )
        flagged = db.execute(
            "UPDATE main.entries SET state=? WHERE vault=? AND state=? AND path IN (SELECT path FROM gone)",
            (MISSING, vault, STORED),
        ).rowcount
        if flagged > SHOWN:
            log.warning("... and %d more entries of vault %s are missing from the inventory", flagged - SHOWN, vault)
        return flagged, back


def _parallel(path: Path) -> bool:
    """Whether to stage in two processes: a large inventory, and a core to spare
    (on a machine whose cores are busy, a second process only adds its start)."""
    cores = os.cpu_count() or 1
    return cores > 1 and path.stat().st_size >= PARALLEL_MIN and os.getloadavg()[0] <= cores - 1


def _stage_into(db: sqlite3.Connection, archives: Iterable[dict[str, Any]], progress: Callable[[int], None]) -> int:
    """Stage ``archives`` into the tables ``staged`` and ``staged_manifests`` of ``db``.

    Descriptions are decoded here, in Python, while a second thread hands the
    previous batch to SQLite (which lets go of the GIL while it writes)."""
    batches: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            while (batch := batches.get()) is not None:
                if not failure:
                    db.executemany(_INSERT, batch)
        except Exception as error:  # noqa: BLE001 - raised again by the staging thread, below
            failure.append(error)
            while batches.get() is not None:
                pass

    db.execute("BEGIN")
    writer = threading.Thread(target=write, name="inventory-stage", daemon=True)
    writer.start()
    count = 0
    manifests: list[tuple[Any, ...]] = []
    try:
        batch: list[tuple[Any, ...]] = []
        for item in archives:
            row = _row(item)
            if row is None:
                continue
            if row[1] is not None and row[2] == manifest.MANIFEST_DIR and manifest.is_manifest(row[1]):
                manifests.append((row[0], row[3], row[5], row[6]))
            else:
                batch.append(row)
            count += 1
            if len(batch) == BATCH:
                batches.put(batch)
                batch = []
                progress(count)
                if failure:
                    break
        batches.put(batch)
    except BaseException:
        batches.put(None)
        writer.join()
        db.execute("ROLLBACK")
        raise
    batches.put(None)
    writer.join()
    if failure:
        db.execute("ROLLBACK")
        raise failure[0]
    db.executemany("INSERT INTO staged_manifests VALUES (?,?,?,?)", manifests)
    db.execute("COMMIT")
    progress(count)
    return count


def _start_worker(path: Path, start: int, stop: int, scratch: Path) -> subprocess.Popen[str]:
    """A fresh interpreter staging one run (never a fork of a process full of threads)."""
    package_root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from glacierfs.reconcile import stage_run; print(stage_run(*sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(start), str(stop), str(scratch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stage_run(path: str, start: str, stop: str, scratch: str) -> str:
    """In a process of its own: stage one run of the inventory into a scratch database;
    what it did, for the log."""
    db = sqlite3.connect(scratch, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=OFF")  # scratch: thrown away whatever happens
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_STAGE.replace("CREATE TEMP TABLE", "CREATE TABLE"))
        count = _stage_into(db, inventoryfile.iter_archive_range(Path(path), int(start), int(stop)), _quiet)
    finally:
        db.close()
    return f"{count} archives, peak RSS {_peak_rss_mib():.0f} MiB"


def _peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, which starts afresh at exec (ru_maxrss
    keeps the high-water mark of the process it was forked from)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _parse_iso(text: str | None) -> float | None:
    return timestamps.parse_iso(text) if text else None


def _compact_iso(text: str | None) -> str:
    return timestamps.compact((timestamps.parse_iso(text) if text else None) or 0)


def _row(item: dict[str, Any]) -> tuple[Any, ...] | None:
    """The staged row of one inventory item; None for an item without an id."""
    archive_id = item.get("ArchiveId")
    if not isinstance(archive_id, str) or not archive_id:
        return None
    description = item.get("ArchiveDescription")
    created = item.get("CreationDate")
    size = item.get("Size")
    tree_hash = item.get("SHA256TreeHash")
    decoded = names.decode(description) if isinstance(description, str) else None
    if decoded is None:
        wanted = parent = mtime = None
    else:
        wanted, mtime = decoded
        parent = parent_of(wanted)
    return (
        archive_id,
        wanted,
        parent,
        str(created) if created is not None and created != "" else None,
        mtime,
        size if type(size) is int and size >= 0 else 0,
        tree_hash if type(tree_hash) is str else None,
    )


def reconcile(
    catalog_path: Path,
    vault: str,
    archives: Iterable[dict[str, Any]] | Path,
    dated: float,
    progress: Callable[[int], None] = _quiet,
) -> Outcome:
    """Stage the inventory's archives (or the inventory file) and apply them."""
    reconciler = Reconciler(catalog_path, vault, dated)
    try:
        if isinstance(archives, Path):
            reconciler.stage_file(archives, progress)
        else:
            reconciler.stage(archives, progress)
        return reconciler.apply()
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise errors.NoSpace(f"the disk holding {catalog_path} is full: {error}") from error
        raise
    finally:
        reconciler.close()
