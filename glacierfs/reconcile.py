"""Applying a staged inventory to the catalog as set operations in SQLite.

The inventory's rows are staged in a temporary table (staging.py), and SQL
decides the rest: which archives are new, known or gone; which name each new
one gets (the newest of a name takes it, older ones a ``.older-STAMP-ID8``
suffix, and an archive whose name cannot be had goes to ``_unnamed/ID``);
which directories hold them; which entries a later inventory no longer lists
(``missing``). Python's memory does not grow with the vault. The known
archives and the staged ones are compared in the order of their ids.

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
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from glacierfs import errors, manifest
from glacierfs.catalog import DIRECTORY, FILE, MISSING, STORED
from glacierfs.staging import EarlyStaging, KnownCopy, Stager, copy_known, quiet

log = logging.getLogger(__name__)

UNNAMED = "_unnamed"  # archives whose description names nothing, by archive id
LAG_GRACE = 2 * 24 * 3600  # an inventory describes the vault up to two days earlier
SHOWN = 20  # entries named one by one in the log; the rest are counted
CLAIMED_FOLDERS = 16  # _unnamed folders whose names the one walk of the new names looks for (see _place)

# What staging._listed_row makes of the fields, in SQL, where staged rows are used.
_CREATED = "NULLIF(CAST(s.created_text AS TEXT), '')"
_SIZE = "CASE WHEN typeof(s.size) = 'integer' AND s.size >= 0 THEN s.size ELSE 0 END"
_TREE_HASH = "CASE WHEN typeof(s.tree_hash) = 'text' THEN s.tree_hash END"
_ENTRY_COLUMNS = "vault, path, parent, kind, size, mtime_ns, mode, uid, gid, state, archive_id, tree_hash, created"


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


class Reconciler(Stager):
    """One application of one inventory to one vault, on its own connection."""

    def __init__(self, catalog_path: Path, vault: str, dated: float, expected: int | None = None) -> None:
        """``expected``: as ``Stager``'s."""
        self.dated = dated
        self.now = time.time()
        super().__init__(catalog_path, vault, expected)
        # The sort of a first inventory's millions of new names takes a second core
        # when there is one: a thread that sorts a run of them while the next run is
        # read, each run up to 16 MiB (250 of the catalog's pages) in memory. (A
        # thread per core sorted a million names in 0.95 s instead of 1.2 s on 2
        # cores, but held 16 MiB more.) A later inventory's sorts of ids, beside the
        # thread that copies the known archives (sorting them too), take none.
        sorting = self.decode_while_staging and (os.cpu_count() or 1) > 1
        self.db.execute(f"PRAGMA threads={1 if sorting else 0}")
        self.db.execute("PRAGMA synchronous=NORMAL")  # as the catalog's own connection (sqlitedb.py)
        # The write of a large inventory leaves a large WAL: this connection copies it
        # back (apply) rather than the mount's next small write.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self._staged_index = False
        self._known = False
        self._known_table = "known"
        self._attached: KnownCopy | None = None

    def close(self) -> None:
        if self._attached is not None:
            self._detach()
        super().close()

    def apply(self) -> Outcome:
        """Work out the placement under a snapshot, then write it in one transaction."""
        copies = self._copies()
        if self._side is not None:
            self._index_staged()  # while the thread may still be copying
        side = self._side_copy()
        self.db.execute("BEGIN")
        try:
            seen = self._data_version()
            self._place(side if side is not None and side[1] == seen else None)
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
        self._detach()  # its scratch removed after the checkpoint's fsyncs (see Stager.stage_file)
        return replace(outcome, copies=copies)

    def _detach(self) -> None:
        attached, self._attached = self._attached, None
        if attached is not None:
            self.db.execute("DETACH DATABASE side")
            attached.discard()

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
        if replaced:
            self._listed -= db.executemany("DELETE FROM staged WHERE archive_id=?", replaced).rowcount
        if not db.execute("SELECT 1 FROM main.doubts WHERE vault=? LIMIT 1", (vault,)).fetchone():
            return ()
        # Size and tree hash first: only the few archives that match a doubt are decoded.
        found = db.execute(
            f"""SELECT s.archive_id, d.spool_id, d.path FROM staged s JOIN main.doubts d
            ON d.vault=? AND {_SIZE}=d.size AND {_TREE_HASH}=d.tree_hash
            AND s.archive_id IS NOT d.kept AND parse_iso({_CREATED}) >= d.since - 60
            AND {"s.wanted" if self.decode_while_staging else "decoded_path(s.description)"} = d.path
            WHERE NOT EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.archive_id=s.archive_id)""",
            (vault, vault),
        ).fetchall()
        if found:
            gone = db.executemany("DELETE FROM staged WHERE archive_id=?", [(copy,) for copy, _, _ in found])
            self._listed -= gone.rowcount
        return tuple(Copy(*row) for row in found)

    def _side_copy(self) -> tuple[str, int] | None:
        """The table the thread copied the known archives into, attached, and the
        catalog's data_version (as this connection saw it) before the copy's snapshot."""
        side, self._side = self._side, None
        if side is None:
            return None
        try:
            version = side.finish()
        except sqlite3.Error as error:
            log.info("the known archives of vault %s are copied again: %s", self.vault, error)
            side.discard()
            return None
        self.db.execute("ATTACH DATABASE ? AS side", (str(side.scratch),))
        self._attached = side
        return "side.known", version

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA main.data_version").fetchone()[0])

    def _place(self, side: tuple[str, int] | None = None) -> None:
        """temp.new: the new archives in the order of their names; temp.moved: those
        that do not get the name they want, and the path they get; temp.dirs:
        the directories the catalog lacks for them."""
        db, vault = self.db, self.vault
        for table in ("known", "fresh", "new", "parents", "up", "claimed", "blocked", "moved", "dirs"):
            db.execute(f"DROP TABLE IF EXISTS temp.{table}")
        db.execute("DELETE FROM staged_manifests")  # placed again: the catalog changed meanwhile
        self._known = self._knows_archives()
        # A vault with no entry at all (its first inventory): no new name can be
        # taken by one, so that is not looked up for each of a million.
        holds = db.execute("SELECT 1 FROM main.entries WHERE vault=? LIMIT 1", (vault,)).fetchone() is not None
        deleted = db.execute("SELECT 1 FROM main.deleted LIMIT 1").fetchone() is not None
        unseen = "NOT EXISTS (SELECT 1 FROM main.deleted d WHERE d.archive_id = s.archive_id)" if deleted else "1"
        if self._known:
            if side is not None:  # copied meanwhile, of the catalog as it is now
                self._known_table = side[0]
            else:
                self._known_table = "known"
                copy_known(db, "temp", vault)
            known = self._known_table
            # The staged archives the catalog does not know, nor deleted: staged and
            # known walked in the order of their ids, side by side.
            self._index_staged()
            db.execute("CREATE TEMP TABLE fresh (id INTEGER PRIMARY KEY)")
            db.execute(
                f"""INSERT INTO fresh SELECT s.rowid FROM staged s INDEXED BY staged_by_id
                WHERE NOT EXISTS (SELECT 1 FROM {known} k WHERE k.archive_id = s.archive_id) AND {unseen}
                ORDER BY s.archive_id"""
            )
        elif self._thin is not None:  # staged by ids, and the catalog knows none of them any more
            db.execute("CREATE TEMP TABLE fresh (id INTEGER PRIMARY KEY)")
            db.execute(f"INSERT INTO fresh SELECT s.rowid FROM staged s WHERE {unseen}")
        if self._thin is not None:
            self._fill()
        # Nothing known (and staged whole): every staged archive is new, unless deleted.
        chosen = "s.rowid IN (SELECT id FROM fresh)" if self._known or self._thin is not None else unseen
        if not self.decode_while_staging:
            db.execute(
                f"""UPDATE staged AS s SET wanted = decoded_path(description), parent = decoded_parent(description),
                mtime = decoded_mtime(description) WHERE {chosen}"""
            )
        # glacierfs's manifests are archives too, never files of the tree.
        manifests = f"s.parent IS '{manifest.MANIFEST_DIR}' AND is_manifest(s.wanted)"
        db.execute(
            f"""INSERT INTO staged_manifests SELECT archive_id, {_CREATED}, {_SIZE}, {_TREE_HASH} FROM staged s
            WHERE {manifests} AND {chosen}"""
        )
        # The new archives sorted once: by the name they want, the newest of a
        # name first. Row n-1 then tells row n whether it is an older namesake,
        # or the same archive listed twice.
        db.execute(
            f"""CREATE TEMP TABLE new AS SELECT archive_id, wanted, parent, {_CREATED} AS created_text, mtime,
                {_SIZE} AS size, {_TREE_HASH} AS tree_hash
            FROM staged s WHERE {chosen} AND NOT ({manifests})
            ORDER BY wanted, created_text DESC, archive_id"""
        )
        # The directories the new names are in, found once (a walk of them all),
        # with each of their ancestors.
        db.execute("CREATE TEMP TABLE parents (dir TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("INSERT INTO parents SELECT DISTINCT parent FROM new WHERE parent != ''")
        db.execute(
            """CREATE TEMP TABLE up AS WITH RECURSIVE up(dir, ancestor) AS (
                SELECT dir, dir FROM parents
                UNION
                SELECT dir, parent_of(ancestor) FROM up WHERE parent_of(ancestor) != ''
            ) SELECT dir, ancestor FROM up"""
        )
        db.execute("CREATE INDEX temp.up_by_ancestor ON up (ancestor)")
        # The exceptions: an older archive of a name, or one whose name is taken,
        # gets the suffix; one without a name goes to _unnamed (and so, below, does
        # one under a file).
        db.execute("CREATE TEMP TABLE moved (id INTEGER PRIMARY KEY, final TEXT, parent TEXT, skip INTEGER NOT NULL)")
        db.execute(
            """INSERT INTO moved (id, final, parent, skip)
            SELECT n.rowid,
                CASE WHEN n.wanted IS NOT NULL
                    THEN n.wanted || '.older-' || compact_iso(n.created_text) || '-' || substr(n.archive_id, 1, 8)
                END,
                n.parent,
                p.archive_id IS n.archive_id
            FROM new n LEFT JOIN new p ON p.rowid = n.rowid - 1
            WHERE n.wanted IS NULL OR p.wanted IS n.wanted
               OR (? AND EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=n.wanted))""",
            (holds, vault),
        )
        db.execute("CREATE INDEX temp.moved_by_final ON moved (final)")
        # What the rest asks of the new names, answered by one walk of them: which
        # are the name of a directory a new name needs, of a suffixed name, or of
        # an _unnamed folder.
        db.execute("CREATE TEMP TABLE claimed (name TEXT PRIMARY KEY) WITHOUT ROWID")
        db.executemany(
            "INSERT OR IGNORE INTO claimed VALUES (?)",
            [(_unnamed_folder(number),) for number in range(1, CLAIMED_FOLDERS + 1)],
        )
        db.execute(
            """INSERT OR IGNORE INTO claimed SELECT ancestor FROM up
            UNION SELECT final FROM moved WHERE final IS NOT NULL ORDER BY 1"""
        )
        db.execute("DELETE FROM claimed WHERE name NOT IN (SELECT wanted FROM new WHERE wanted IN claimed)")
        # A name under a file cannot be had: the directories a new name needs with an
        # ancestor that is a file (in the catalog, or a name a new archive wants and
        # the catalog lacks) are blocked, and what is in them goes to _unnamed.
        db.execute(
            """CREATE TEMP TABLE blocked AS SELECT DISTINCT dir FROM up WHERE ancestor IN (
                SELECT path FROM main.entries WHERE vault=? AND kind=? AND path IN (SELECT ancestor FROM up)
                UNION
                SELECT name FROM claimed WHERE name IN (SELECT ancestor FROM up)
                  AND NOT EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=claimed.name))""",
            (vault, FILE, vault),
        )
        if db.execute("SELECT 1 FROM blocked LIMIT 1").fetchone():
            self._nameless_in("parent IN (SELECT dir FROM blocked)")
        # A suffixed name that is taken as well (by the catalog, a name a new
        # archive wants, or an earlier suffixed one) goes to _unnamed too.
        db.execute(
            """UPDATE moved SET final = NULL
            WHERE final IS NOT NULL AND (
                EXISTS (SELECT 1 FROM main.entries e WHERE e.vault=? AND e.path=moved.final)
                OR final IN (SELECT name FROM claimed)
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
                self._nameless_in("parent = ? OR substr(parent, 1, ?) = ?", (clash, len(clash) + 1, clash + "/"))
            self._unnamed()

    def _nameless_in(self, directories: str, values: tuple[Any, ...] = ()) -> None:
        """Every new archive in the directories ``directories`` picks (a condition on
        ``parent``) is to go to _unnamed, whatever name it was to have."""
        self.db.execute(f"UPDATE moved SET final = NULL WHERE {directories}", values)
        self.db.execute(
            f"""INSERT OR IGNORE INTO moved (id, final, parent, skip)
            SELECT rowid, NULL, parent, 0 FROM new WHERE {directories}""",
            values,
        )

    def _unnamed(self) -> None:
        """Archives without a usable name: _unnamed/ID, or _unnamed-2/ID, ... where
        _unnamed is a file (the user's own, or a new archive's name)."""
        db, vault = self.db, self.vault
        number = 0
        while db.execute("SELECT 1 FROM moved WHERE final IS NULL AND NOT skip LIMIT 1").fetchone():
            number += 1
            folder = _unnamed_folder(number)
            is_file = db.execute(
                """SELECT EXISTS (SELECT 1 FROM main.entries WHERE vault=? AND path=? AND kind=?)
                    OR EXISTS (SELECT 1 FROM moved WHERE final=?)""",
                (vault, folder, FILE, folder),
            ).fetchone()[0]
            # Or the name of a new archive that keeps it (whether one wants it at all,
            # the walk of the new names in _place found for the first few folders).
            wanted = number > CLAIMED_FOLDERS or db.execute("SELECT 1 FROM claimed WHERE name=?", (folder,)).fetchone()
            if is_file or (
                wanted
                and db.execute(
                    "SELECT 1 FROM new WHERE wanted=? AND rowid NOT IN (SELECT id FROM moved) LIMIT 1", (folder,)
                ).fetchone()
            ):
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
        """temp.dirs: the directories the new files need that the catalog lacks:
        those of the names they keep (from temp.parents, without walking the new
        archives again unless it must), those of the names moved ones get, and
        their ancestors."""
        db = self.db
        db.execute("DELETE FROM dirs")
        db.execute("DROP TABLE IF EXISTS temp.shifted")
        # The directories of moved archives' wanted names: still needed if an
        # archive there keeps its name, which is only in doubt for one that no
        # moved archive keeps as its own (a suffixed name stays in its
        # directory) and that is not blocked (none keeps its name there).
        db.execute(
            """CREATE TEMP TABLE shifted AS SELECT DISTINCT n.parent AS dir FROM moved m JOIN new n ON n.rowid = m.id
            WHERE n.parent != ''"""
        )
        doubt = db.execute(
            """SELECT 1 FROM shifted WHERE dir NOT IN (SELECT parent FROM moved WHERE NOT skip AND parent IS NOT NULL)
            AND dir NOT IN (SELECT dir FROM blocked) LIMIT 1"""
        ).fetchone()
        kept = """UNION SELECT parent FROM new
            WHERE parent IN (SELECT dir FROM shifted) AND rowid NOT IN (SELECT id FROM moved)"""
        db.execute(
            f"""INSERT INTO dirs WITH RECURSIVE up(dir) AS (
                SELECT dir FROM parents WHERE dir NOT IN (SELECT dir FROM shifted)
                {kept if doubt else ""}
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
        # The files in the order of their names: into a vault with no entry after
        # them, each is an append to the primary key's B-tree, which SQLite does
        # without a search from its root. A suffixed name, in the order of the name
        # it wants, is in its place too, bar a name in between (a.txt-2 between
        # a.txt and a.txt.older-...). Then the nameless, those put in an _unnamed
        # folder (a run of their own), and the directories: each a search, and an
        # insert into the middle of a full page (measured, a million archives of
        # which 1% older namesakes and 2% nameless: 1.16 s so, 1.36 s with the
        # namesakes among the nameless, 1.83 s with the directories first).
        file_columns = """SELECT ?, COALESCE(m.final, n.wanted), COALESCE(m.parent, n.parent), ?, n.size,
                   CAST(COALESCE(NULLIF(n.mtime, 0), NULLIF(parse_iso(n.created_text), 0), ?) * 1e9 AS INTEGER),
                   ?, ?, ?, ?, n.archive_id, n.tree_hash, n.created_text"""
        file_values = (vault, FILE, self.now, 0o644, *common)
        added = db.execute(
            f"""INSERT INTO main.entries ({_ENTRY_COLUMNS}) {file_columns}
            FROM new n LEFT JOIN moved m ON m.id = n.rowid WHERE m.id IS NULL OR (NOT m.skip AND m.parent IS n.parent)
            ORDER BY n.rowid""",
            file_values,
        ).rowcount
        added += db.execute(
            f"""INSERT INTO main.entries ({_ENTRY_COLUMNS}) {file_columns}
            FROM moved m JOIN new n ON n.rowid = m.id WHERE NOT m.skip AND m.parent IS NOT n.parent ORDER BY m.final""",
            file_values,
        ).rowcount
        db.execute(
            f"""INSERT INTO main.entries ({_ENTRY_COLUMNS})
            SELECT ?, dir, parent_of(dir), ?, 0, ?, ?, ?, ?, ?, NULL, NULL, NULL FROM dirs ORDER BY dir""",
            (vault, DIRECTORY, int(self.now * 1e9), 0o755, *common),
        )
        self._log_unnamed()
        db.execute(
            """INSERT OR IGNORE INTO main.manifests (archive_id, vault, created, size, tree_hash, applied)
            SELECT archive_id, ?, COALESCE(parse_iso(created_text), 0), size, tree_hash, 0 FROM staged_manifests s
            WHERE NOT EXISTS (SELECT 1 FROM main.deleted d WHERE d.archive_id = s.archive_id)""",
            (vault,),
        )
        flagged, back = self._flags() if self._known else (0, 0)
        return Outcome(self._listed, added, flagged, back)

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

    def _index_staged(self) -> None:
        if not self._staged_index:
            self.db.execute("CREATE INDEX temp.staged_by_id ON staged (archive_id)")
            self._staged_index = True

    def _flags(self) -> tuple[int, int]:
        """Entries an inventory taken well after their upload does not list are
        flagged missing, never dropped; missing ones it lists again are back.
        One walk of the known archives, in the order of their ids, beside the
        staged ones in the same order: what changes state is the rest's business."""
        db, vault = self.db, self.vault
        db.execute("DROP TABLE IF EXISTS temp.changed")
        db.execute(
            f"""CREATE TEMP TABLE changed AS SELECT path, archive_id, state FROM {self._known_table} k
            WHERE CASE k.state
                WHEN ? THEN EXISTS (SELECT 1 FROM staged s WHERE s.archive_id = k.archive_id)
                WHEN ? THEN CASE WHEN EXISTS (SELECT 1 FROM staged s WHERE s.archive_id = k.archive_id) THEN 0
                    ELSE COALESCE(parse_iso(k.created), 0) BETWEEN 1 AND ? END  -- (AND would date every one)
                ELSE 0 END""",
            (MISSING, STORED, self.dated - LAG_GRACE),
        )
        change = """UPDATE main.entries SET state=? WHERE vault=? AND state=?
            AND path IN (SELECT path FROM changed WHERE state=?)"""
        back = db.execute(change, (STORED, vault, MISSING, MISSING)).rowcount
        if back:
            log.info("%d entr(ies) of vault %s missing from an earlier inventory are listed again", back, vault)
        shown = f"SELECT path, archive_id FROM changed WHERE state=? ORDER BY path LIMIT {SHOWN}"
        for path, archive_id in db.execute(shown, (STORED,)):
            log.warning(
                "%s/%s (archive %s) is missing from an inventory taken well after its upload",
                vault,
                path,
                archive_id[:16],
            )
        flagged = db.execute(change, (MISSING, vault, STORED, STORED)).rowcount
        if flagged > SHOWN:
            log.warning("... and %d more entries of vault %s are missing from the inventory", flagged - SHOWN, vault)
        return flagged, back


def _unnamed_folder(number: int) -> str:
    """_unnamed, _unnamed-2, ... (see Reconciler._unnamed)."""
    return UNNAMED if number == 1 else f"{UNNAMED}-{number}"


def reconcile(
    catalog_path: Path,
    vault: str,
    archives: Iterable[dict[str, Any]] | Path,
    dated: float,
    progress: Callable[[int], None] = quiet,
    expected: int | None = None,
    early: EarlyStaging | None = None,
) -> Outcome:
    """Stage the inventory's archives (or the inventory file) and apply them;
    ``expected``: how many archives the file lists, if counted; ``early``: the
    file staged while it was downloaded (taken over: discarded here)."""
    try:
        reconciler = Reconciler(catalog_path, vault, dated, expected)
    except BaseException:
        if early is not None:
            early.discard()
        raise
    try:
        if isinstance(archives, Path):
            reconciler.stage_file(archives, progress, early)
        else:
            reconciler.stage(archives, progress)
        return reconciler.apply()
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise errors.NoSpace(f"the disk holding {catalog_path} is full: {error}") from error
        raise
    finally:
        reconciler.close()
