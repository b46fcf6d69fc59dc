"""Staging an inventory in SQLite, for reconcile.py to apply to the catalog.

A vault of millions of archives does not fit in a dict. The inventory's rows
are staged, a batch at a time, in a temporary table of a connection of our own
to the catalog file, so that SQL can work out what they mean for the catalog
(reconcile.py, which extends ``Stager`` on that connection and calls the SQL
functions registered here). Python's memory does not grow with the vault.

Decoding a description is most of the Python work an archive costs, so only
new archives' are decoded: all of them, while staging, when the catalog knows
none; none at all for a daily inventory of a vault the catalog knows, whose
ids alone are staged (``stage_ids``) and whose few new archives are read from
the file again (``_fill``). The known archives are copied meanwhile, in the
order of their ids, by a thread, for the placement to walk beside the staged
ones in that order. A large inventory is staged in two halves at once, the
second by a process of its own (``stage_run``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from glacierfs import errors, inventoryfile, manifest, names, timestamps
from glacierfs.catalog import PAGE_SIZE
from glacierfs.paths import parent_of

log = logging.getLogger(__name__)

# Items staged per statement: few enough that they are gone before the garbage
# collector would walk them (with 5,000, staging took a fifth longer).
BATCH = 500
SCRATCH_PAGE_SIZE = 16384  # of the known archives' copy (see KnownCopy)
FILL_MAX = 100_000  # new archives picked out by id from a file staged by ids (a set of them in memory)
PARALLEL_MIN = 64 << 20  # inventories from this size (about 160,000 archives) are staged in two processes
# A first inventory from this size is staged while downloaded (at 100,000
# archives, 38 MiB, it took 1.2 s instead of 1.0: two interpreters to start, for
# a download of a fraction of a second).
EARLY_MIN = 64 << 20

_STAGE = """
CREATE TEMP TABLE staged (
    archive_id TEXT NOT NULL,
    description,            -- these four as listed, whatever their type: SQL checks them where it uses them
    created_text,           -- CreationDate as the inventory writes it
    size,
    tree_hash,
    wanted TEXT,            -- the path the description names; NULL: none usable, or not decoded (yet)
    parent TEXT,            -- parent_of(wanted)
    mtime REAL              -- from the description, when it records one; else, decoded while staging, the creation
);
CREATE TEMP TABLE staged_manifests (archive_id TEXT, created_text TEXT, size INTEGER, tree_hash TEXT);
"""
_INSERT_RAW = "INSERT INTO staged (archive_id, description, created_text, size, tree_hash) VALUES (?,?,?,?,?)"
_INSERT_DECODED = "INSERT INTO staged VALUES (?,?,?,?,?,?,?,?)"
_COLUMN_FIELDS = [
    operator.itemgetter(key) for key in ("ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash")
]


def quiet(count: int) -> None:
    """A progress callback that shows nothing."""


class Stager:
    """One inventory staged for one vault, on a connection of its own."""

    def __init__(self, catalog_path: Path, vault: str, expected: int | None = None) -> None:
        """``expected``: the archives the inventory lists, if counted (it decides how
        a file is staged)."""
        self.catalog_path = catalog_path
        self.vault = vault
        self.db = sqlite3.connect(catalog_path, isolation_level=None, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA temp_store=FILE")  # sorts of millions of rows spill to disk, not RAM
        self.db.execute(f"PRAGMA temp.page_size={PAGE_SIZE}")  # as the catalog's: scans of staged rows take less
        self.db.execute("PRAGMA cache_size=-8192")  # 8 MiB per database, whatever the vault's size
        _register_functions(self.db)
        self.db.executescript(_STAGE)
        # Decoding a description is most of the Python work per archive: only
        # those of new archives are decoded. With none known, that is every
        # one, decoded while staged (in two processes for a large inventory).
        self.decode_while_staging = not self._knows_archives()
        self.expected = expected
        self._listed = 0  # archives staged (manifests included), less those write-back owns
        self._thin: Path | None = None  # the file staged by ids alone (see stage_ids)
        self._side: KnownCopy | None = None  # the known archives, copied meanwhile by a thread of its own
        self._early: EarlyStaging | None = None  # the halves staged while downloaded, once taken (stage_file)

    def _knows_archives(self) -> bool:
        return _holds_archives(self.db, self.vault)

    def close(self) -> None:
        if self._side is not None:
            self._side.discard()
        self.db.close()
        if self._early is not None:
            self._early.discard()

    def stage(self, archives: Iterable[dict[str, Any]], progress: Callable[[int], None] = quiet) -> int:
        """Copy the inventory's archives into the staging table; how many had an id."""
        return self._stage_batches(inventoryfile.batched(iter(archives), BATCH), progress)

    def _stage_batches(self, batches: Iterable[list[Any]], progress: Callable[[int], None] = quiet) -> int:
        count = _stage_into(self.db, batches, progress, self.decode_while_staging)
        self._listed += count
        return count

    def stage_file(self, path: Path, progress: Callable[[int], None] = quiet, early: EarlyStaging | None = None) -> int:
        """Stage the inventory in ``path``: a large JSON one in two halves at once
        when a core is spare, the second by a process of its own (the Python work
        per archive is what costs), into a scratch database copied in at the end.
        Measured on 2 cores: 200,000 archives staged in 1.45 s instead of 1.91 s
        with the other core mostly free; no gain with it busy. ``early``: the
        halves staged while the file was downloaded, if they were."""
        if early is not None:
            # Its scratch databases are removed at close, once the catalog is
            # written: on a file system mounted with "discard" (this VM's), blocks
            # freed before the catalog's fsyncs are trimmed as part of them.
            self._early = early
            try:
                return self._take_early(early, progress)
            except errors.InvalidRequest as error:
                log.warning("the inventory could not be staged while downloaded (%s): staging it now", error)
                early.discard()
        if not self.decode_while_staging and self._side is None:
            # The catalog's known archives are copied, in the order of their ids,
            # by a thread of its own while this one stages (SQLite lets go of the
            # GIL: the copy costs no time here on a machine with a core to spare).
            self._side = KnownCopy(self.db, self.catalog_path, self.vault, path.parent)
        if self._ids_will_do(path):
            try:
                return self.stage_ids(path, progress)
            except inventoryfile.NotPlain as error:
                log.info("the inventory of vault %s is read whole: %s", self.vault, error)
                self.db.execute("DELETE FROM temp.staged")
                self._listed = 0
                self._thin = None
        runs = inventoryfile.split(path, 2) if _parallel(path) else None
        if runs is None:
            return self._stage_batches(inventoryfile.iter_batches(path, BATCH), progress)
        fd, name = tempfile.mkstemp(prefix="staging-", suffix=".sqlite", dir=path.parent)
        os.close(fd)
        scratch = Path(name)
        worker = _start_worker(path, *runs[1], scratch, self.decode_while_staging)
        try:
            try:
                batches = inventoryfile.iter_range_batches(path, *runs[0], BATCH)
                count = self._stage_batches(batches, lambda n: progress(n * 2))
            except BaseException:
                worker.kill()  # stopping, or this half failed: the other half is not wanted
                raise
            report = _finished(worker)
            count_other = self._take_in(scratch)
            log.info("half of the inventory of vault %s was staged by a process of its own (%s)", self.vault, report)
        except errors.InvalidRequest as error:
            log.warning("the inventory could not be read in halves (%s): reading it whole", error)
            self.db.execute("DELETE FROM temp.staged")
            self._listed = 0
            return self._stage_batches(inventoryfile.iter_batches(path, BATCH), progress)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            scratch.unlink(missing_ok=True)
        progress(count + count_other)
        return count + count_other

    def _take_in(self, *scratches: Path) -> int:
        """Copy in the rows staging processes staged into ``scratches``: all or none."""
        names = [f"run{number}" for number in range(len(scratches))]
        try:
            for name, scratch in zip(names, scratches, strict=True):
                self.db.execute(f"ATTACH DATABASE ? AS {name}", (str(scratch),))
            with _savepoint(self.db, "take"):
                count = sum(
                    int(self.db.execute(f"INSERT INTO temp.staged SELECT * FROM {name}.staged").rowcount)
                    for name in names
                )
        finally:
            for (name,) in self.db.execute("SELECT name FROM pragma_database_list WHERE name LIKE 'run%'").fetchall():
                self.db.execute(f"DETACH DATABASE {name}")
        self._listed += count
        return count

    def _take_early(self, early: EarlyStaging, progress: Callable[[int], None]) -> int:
        """The rows the halves' processes staged (decoded), once both are done.
        InvalidRequest, with nothing staged, if either failed."""
        count = self._take_in(*early.finish(lambda: progress(0)))
        self.decode_while_staging = True  # whatever the catalog knows by now: these rows are decoded
        progress(count)
        return count

    def _ids_will_do(self, path: Path) -> bool:
        """Whether the catalog knows (nearly) every archive the inventory lists,
        so that their ids are all it needs of them (a daily inventory, nothing
        or little changed). Not while write-back has doubts to settle: those
        are matched on what the inventory says of new archives before anything
        else is worked out."""
        if self.decode_while_staging or self.expected is None or inventoryfile.sniff_format(path) != inventoryfile.JSON:
            return False
        db, vault = self.db, self.vault
        if db.execute("SELECT 1 FROM main.doubts WHERE vault=? LIMIT 1", (vault,)).fetchone():
            return False
        entries = db.execute("SELECT count(*) FROM main.entries WHERE vault=?", (vault,)).fetchone()[0]
        return bool(entries >= self.expected * 0.9)

    def stage_ids(self, path: Path, progress: Callable[[int], None] = quiet) -> int:
        """Stage the archive ids of the JSON inventory in ``path``, nothing else:
        once the archives the catalog does not know are found, their rows are
        read from the file again (``_fill``). NotPlain if the ids cannot be read
        so; nothing is staged then."""
        db = self.db
        count = 0
        with _savepoint(db, "stage"):
            for ids in inventoryfile.iter_ids(path):
                _insert_values(db, "INSERT INTO staged (archive_id) VALUES (?)", ids)
                count += len(ids)
                progress(count)
        self._thin = path
        self._listed += count
        return count

    def _fill(self) -> None:
        """Staged by ids alone: the whole rows of the new archives (temp.fresh),
        read from the file again, in place of their ids. Few are new on a day
        like most: they are picked out by id as the file is read; if many are,
        every archive is staged whole instead."""
        db, path = self.db, self._thin
        assert path is not None
        db.execute("DROP TABLE IF EXISTS temp.fill")
        # Rows still staged by id alone (a second placement, the catalog changed
        # meanwhile, may find others new).
        db.execute(
            """CREATE TEMP TABLE fill AS SELECT archive_id FROM staged WHERE rowid IN (SELECT id FROM fresh)
            AND description IS NULL AND created_text IS NULL AND size IS NULL AND tree_hash IS NULL"""
        )
        count = db.execute("SELECT count(*) FROM fill").fetchone()[0]
        if not count:
            return
        before = db.execute("SELECT max(rowid) FROM staged").fetchone()[0]
        if count <= FILL_MAX:
            wanted = {archive_id for (archive_id,) in db.execute("SELECT archive_id FROM fill")}
            batches: Iterable[list[Any]] = (
                [item for item in batch if isinstance(item, dict) and item.get("ArchiveId") in wanted]
                for batch in inventoryfile.iter_batches(path, BATCH)
            )
            _stage_into(db, batches, quiet, decode=False)
            # After: the new rows' rowids stay above ``before``.
            db.execute(
                """DELETE FROM staged WHERE rowid <= ? AND rowid IN (SELECT id FROM fresh)
                AND archive_id IN (SELECT archive_id FROM fill)""",
                (before,),
            )
        else:
            _stage_into(db, inventoryfile.iter_batches(path, BATCH), quiet, decode=False)
            db.execute("DELETE FROM staged WHERE rowid <= ? AND archive_id IN (SELECT archive_id FROM fill)", (before,))
            db.execute(
                "DELETE FROM staged WHERE rowid > ? AND archive_id NOT IN (SELECT archive_id FROM fill)", (before,)
            )
        db.execute("DELETE FROM fresh WHERE id NOT IN (SELECT rowid FROM staged)")
        db.execute("INSERT INTO fresh SELECT rowid FROM staged WHERE rowid > ?", (before,))
        log.info("%d archive(s) of vault %s are new: read from its inventory again", count, self.vault)


def copy_known(db: sqlite3.Connection, schema: str, vault: str, catalog: str = "main") -> None:
    """``schema``.known: the archives the catalog (attached as ``catalog``) knows,
    keyed by id (one sorted write instead of a copy and then an index of it)."""
    db.execute(
        f"""CREATE {"TEMP " if schema == "temp" else ""}TABLE {schema}.known (archive_id TEXT NOT NULL,
        path TEXT NOT NULL, state TEXT, created TEXT, PRIMARY KEY (archive_id, path)) WITHOUT ROWID"""
    )
    db.execute(
        f"""INSERT INTO {schema}.known SELECT archive_id, path, state, created FROM {catalog}.entries
        WHERE vault=? AND archive_id IS NOT NULL ORDER BY archive_id, path""",
        (vault,),
    )


class KnownCopy:
    """``copy_known`` into a scratch database, by a thread and a connection of
    its own, under a snapshot taken after ``version`` was read: if the catalog
    is at the same version when the placement takes its snapshot, the copy is
    the catalog as that snapshot sees it."""

    def __init__(self, db: sqlite3.Connection, catalog_path: Path, vault: str, folder: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="known-", suffix=".sqlite", dir=folder)
        os.close(fd)
        self.scratch = Path(name)
        self.version = int(db.execute("PRAGMA main.data_version").fetchone()[0])
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, args=(catalog_path, vault), name="inventory-known")
        self._thread.start()

    def _copy(self, catalog_path: Path, vault: str) -> None:
        try:
            # The scratch database is this connection's main one: SQLite sorts in runs of
            # 250 of the main database's pages, and the scratch's are smaller than the
            # catalog's (4 MiB runs in memory instead of 16 MiB: at 100,000 archives
            # as at a million, since both take more than one).
            db = sqlite3.connect(self.scratch, isolation_level=None, timeout=60, check_same_thread=False)
            try:
                db.execute(f"PRAGMA page_size={SCRATCH_PAGE_SIZE}")
                db.execute("PRAGMA journal_mode=OFF")  # scratch: thrown away whatever happens
                db.execute("PRAGMA synchronous=OFF")
                db.execute("PRAGMA temp_store=FILE")
                db.execute("PRAGMA cache_size=-8192")
                db.execute("ATTACH DATABASE ? AS catalog", (str(catalog_path),))
                db.execute("BEGIN")
                copy_known(db, "main", vault, "catalog")
                db.execute("COMMIT")
            finally:
                db.close()
        except BaseException as error:  # noqa: BLE001 - reported by finish(), in the reconciling thread
            self._failure = error

    def finish(self) -> int:
        """Wait for the copy; the version it goes with. sqlite3.Error if it failed."""
        self._thread.join()
        if self._failure is not None:
            raise sqlite3.Error(f"the copy of the known archives failed: {self._failure}")
        return self.version

    def discard(self) -> None:
        self._thread.join()
        self.scratch.unlink(missing_ok=True)


def knows_archives(catalog_path: Path, vault: str) -> bool:
    """Whether the catalog holds an archive of ``vault``."""
    db = sqlite3.connect(catalog_path, timeout=60)
    try:
        return _holds_archives(db, vault)
    finally:
        db.close()


def _holds_archives(db: sqlite3.Connection, vault: str) -> bool:
    found = db.execute("SELECT 1 FROM main.entries WHERE vault=? AND archive_id IS NOT NULL LIMIT 1", (vault,))
    return found.fetchone() is not None


class EarlyStaging:
    """A vault's first inventory, staged while it is downloaded: two processes,
    each staging (and decoding) a half of the file as its bytes arrive, into a
    scratch database of its own (``stage_half``). The download leaves more
    than half of two cores idle (measured, a million archives: 1.9 s of
    download, 1.5 s of CPU in all, the emulator's included): staging meanwhile
    takes most of the download's time off the apply. Nothing reaches the catalog until ``Stager.stage_file`` takes
    the halves in, after the download's checks; ``discard`` stops the processes
    and removes what they staged."""

    def __init__(self, path: Path, size: int) -> None:
        self.scratches: list[Path] = []
        self._workers: list[subprocess.Popen[str]] = []
        # The first half's process starts on bytes already there, the second's
        # waits for the download to reach its half: the first half is made the
        # larger, so that both end together (measured, a million archives: 4/7,
        # 0.2-0.3 s sooner than halves alike). Halves alike for a file that is
        # (nearly) all there already, a download resumed.
        there = path.stat().st_size if path.exists() else 0
        middle = size // 2 if there >= size // 2 else size * 4 // 7
        try:
            for half in (0, 1):
                fd, name = tempfile.mkstemp(prefix="staging-", suffix=".sqlite", dir=path.parent)
                os.close(fd)
                self.scratches.append(Path(name))
                arguments = [str(path), str(size), str(half), str(middle), name, str(os.getpid())]
                self._workers.append(_start_process("stage_half", arguments))
        except BaseException:
            self.discard()
            raise

    @classmethod
    def start_if_useful(cls, catalog_path: Path, vault: str, path: Path, size: int | None) -> EarlyStaging | None:
        """Staging while downloading, when it pays: a large inventory of known size, a
        vault the catalog holds no archive of (every description is to be decoded),
        two cores or more."""
        if size is None or size < EARLY_MIN or (os.cpu_count() or 1) < 2:
            return None
        if knows_archives(catalog_path, vault):
            return None
        log.info("the inventory of vault %s is staged by two processes while it is downloaded", vault)
        return cls(path, size)

    def finish(self, waiting: Callable[[], None] = lambda: None) -> list[Path]:
        """Wait for both halves, calling ``waiting`` now and then (it may raise to stop);
        the scratch databases. InvalidRequest if a half failed."""
        reports = [_finished(worker, waiting) for worker in self._workers]
        log.info("the inventory was staged by two processes while downloaded (%s)", "; ".join(reports))
        return self.scratches

    def discard(self) -> None:
        for worker in self._workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
        self._workers = []
        for scratch in self.scratches:
            scratch.unlink(missing_ok=True)
        self.scratches = []


def _parallel(path: Path) -> bool:
    """Whether to stage in two processes: a large inventory, and a core to spare
    (on a machine whose cores are busy, a second process only adds its start)."""
    cores = os.cpu_count() or 1
    return cores > 1 and path.stat().st_size >= PARALLEL_MIN and _others_running() <= cores - 2


def _others_running(samples: int = 5) -> float:
    """How many other threads are running now: the median over a few looks 10 ms
    apart at the kernel's count of runnable ones, less this one. Not the load
    average: a minute's average counts what this process itself just did (the
    download among it) and threads waiting on a disk, which kept a second
    process from being used on an idle machine."""
    try:
        seen = []
        for look in range(samples):
            if look:
                time.sleep(0.01)
            with open("/proc/loadavg", encoding="ascii") as loadavg:
                seen.append(int(loadavg.read().split()[3].split("/")[0]) - 1)
        return sorted(seen)[len(seen) // 2]
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def _stage_into(
    db: sqlite3.Connection, batches: Iterable[list[Any]], progress: Callable[[int], None], decode: bool
) -> int:
    """Stage the inventory items in ``batches`` into the table ``staged`` of
    ``db``; how many had an id. A batch with a value SQLite cannot store is
    staged again, each item checked in Python.

    One thread: a second one writing the previous batch gained nothing, since
    it waits for the GIL each time SQLite hands it back (measured)."""
    insert = _INSERT_DECODED if decode else _INSERT_RAW
    count = staged = 0
    with _savepoint(db, "staging"):  # a transaction of its own, or part of the caller's
        for batch in batches:
            db.execute("SAVEPOINT batch")
            try:
                staged += _insert_values(db, insert, list(chain.from_iterable(_rows(batch, decode))))
            except (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError, UnicodeEncodeError):
                db.execute("ROLLBACK TO batch")
                staged += _insert_values(db, insert, list(chain.from_iterable(_rows(batch, decode, checked=True))))
            db.execute("RELEASE batch")
            count += len(batch)
            progress(count)
    return staged


def _insert_values(db: sqlite3.Connection, insert: str, values: list[Any]) -> int:
    """``insert`` (an INSERT of one row of VALUES) of the rows whose values are
    ``values``, one after the other, up to BATCH rows a statement: a statement
    of many rows takes about 60% of the time executemany takes, which pays a
    step and a reset for each row (measured, half a million rows of a
    million-archive inventory: 0.87 s against 1.5 s)."""
    width = insert.count("?")
    rows = len(values) // width
    done = 0
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)
        done += db.execute(_many_rows(insert, count), values[start * width : (start + count) * width]).rowcount
    return done


@functools.lru_cache(maxsize=16)
def _many_rows(insert: str, rows: int) -> str:
    head, _, row = insert.partition(" VALUES ")
    return f"{head} VALUES {','.join([row] * rows)}"


@contextlib.contextmanager
def _savepoint(db: sqlite3.Connection, name: str) -> Iterator[None]:
    """What the block stages is kept whole, or (it raised) not at all."""
    db.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        db.execute(f"ROLLBACK TO {name}")
        db.execute(f"RELEASE {name}")
        raise
    db.execute(f"RELEASE {name}")


def _rows(batch: list[Any], decode: bool, checked: bool = False) -> Iterable[tuple[Any, ...]]:
    """The staged rows of a batch of inventory items: taken apart by C code
    when every item has the service's five fields and a usable id, else (or
    when ``checked``) item by item by ``_listed_row``. Decoded: with the path,
    parent and mtime the description names, in place of the description
    (which nothing needs once decoded).

    Column by column, zipped into rows as the caller flattens them: a tuple per
    archive kept alive is what the garbage collector would walk, again and
    again, in a batch of millions."""
    columns: list[list[Any]] | None = None
    if not checked:
        try:
            columns = [list(map(field, batch)) for field in _COLUMN_FIELDS]
        except (KeyError, TypeError):  # a field missing, an item not an object
            columns = None
        if columns is not None and not (set(map(type, columns[0])) <= {str} and all(columns[0])):
            columns = None
    if columns is None:
        rows = [row for row in map(_listed_row, batch) if row is not None]
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in _COLUMN_FIELDS]
    if not decode:
        return list(zip(*columns, strict=True))
    paths, mtimes = names.decode_many(columns[1])
    parents = [None if path is None else path.rpartition("/")[0] for path in paths]
    ids, _, created, sizes, tree_hashes = columns
    # Where the description records no time, the file's is the archive's
    # creation (reconcile.py's _write): read here, in the staging process, not
    # by a call from SQL per archive in the one that writes the catalog.
    for index in [index for index, mtime in enumerate(mtimes) if not mtime]:
        text = created[index]
        if type(text) is str:
            mtimes[index] = _creation_time(text) or mtimes[index]
    return zip(ids, repeat(None), created, sizes, tree_hashes, paths, parents, mtimes)


def _start_worker(path: Path, start: int, stop: int, scratch: Path, decode: bool) -> subprocess.Popen[str]:
    """A fresh interpreter staging one run (never a fork of a process full of threads)."""
    return _start_process("stage_run", [str(path), str(start), str(stop), str(scratch), "decode" if decode else "raw"])


def _start_process(function: str, arguments: list[str]) -> subprocess.Popen[str]:
    """A fresh interpreter calling ``function`` of this module with ``arguments``,
    printing what it returns (never a fork of a process full of threads)."""
    package_root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    code = f"import sys; from glacierfs.staging import {function}; print({function}(*sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finished(worker: subprocess.Popen[str], waiting: Callable[[], None] = lambda: None) -> str:
    """What a staging process printed (its report), once it has exited, calling
    ``waiting`` now and then meanwhile (it may raise to stop). InvalidRequest,
    with the last line it wrote to stderr, if it failed."""
    while True:
        try:
            report, problem = worker.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            waiting()
    if worker.returncode:
        raise errors.InvalidRequest(problem.strip().splitlines()[-1] if problem.strip() else "it failed")
    return report.strip()


def stage_run(path: str, start: str, stop: str, scratch: str, how: str = "raw") -> str:
    """In a process of its own: stage one run of the inventory into a scratch database
    (decoding the descriptions if ``how`` is "decode"); what it did, for the log."""
    batches = inventoryfile.iter_range_batches(Path(path), int(start), int(stop), BATCH)
    return _stage_scratch(scratch, batches, how == "decode")


def stage_half(path: str, size: str, half: str, middle: str, scratch: str, parent: str) -> str:
    """In a process of its own: stage (decoded) one half of an inventory as it is
    downloaded into ``path`` (see EarlyStaging); what it did, for the log."""
    parent_pid = int(parent)
    batches = inventoryfile.iter_growing_half(
        Path(path), int(size), int(half), int(middle), BATCH, lambda: os.getppid() == parent_pid
    )
    return _stage_scratch(scratch, batches, decode=True)


def _stage_scratch(scratch: str, batches: Iterable[list[Any]], decode: bool) -> str:
    db = sqlite3.connect(scratch, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=OFF")  # scratch: thrown away whatever happens
        db.execute("PRAGMA synchronous=OFF")
        _register_functions(db)
        db.executescript(_STAGE.replace("CREATE TEMP TABLE", "CREATE TABLE"))
        count = _stage_into(db, batches, quiet, decode)
    except inventoryfile.NotPlain as error:
        raise errors.InvalidRequest(f"the inventory cannot be cut in halves: {error}") from error
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


# CreationDate as the service writes it: parse_iso's answer from the day's
# midnight (computed once per day) and the time's fields.
_SERVICE_DATE = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.\d{1,9})?Z", re.ASCII)
_DAYS = timestamps.Midnights(lambda day: timestamps.parse_iso(f"{day}T00:00:00Z"))  # YYYY-MM-DD


def _creation_time(text: str) -> float | None:
    """``timestamps.parse_iso(text)``, quicker for the service's own form."""
    match = _SERVICE_DATE.fullmatch(text)
    if match is None:
        return timestamps.parse_iso(text)
    day, hours, minutes, seconds = match.groups()
    midnight = _DAYS[day]
    return None if midnight is None else midnight + int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def _parse_iso(text: str | None) -> float | None:
    return timestamps.parse_iso(text) if text else None


def _compact_iso(text: str | None) -> str:
    return timestamps.compact((timestamps.parse_iso(text) if text else None) or 0)


def _listed_row(item: Any) -> tuple[Any, ...] | None:
    """The fields of one inventory item, for an item C code cannot take apart
    (see ``_rows``); None for one without an id."""
    if not isinstance(item, dict):
        return None
    archive_id = item.get("ArchiveId")
    if not isinstance(archive_id, str) or not archive_id:
        return None
    description = item.get("ArchiveDescription")
    created = item.get("CreationDate")
    size = item.get("Size")
    tree_hash = item.get("SHA256TreeHash")
    return (
        _storable(archive_id),
        _storable(description) if isinstance(description, str) else None,
        _storable(str(created)) if created is not None and created != "" else None,
        size if type(size) is int and 0 <= size < 1 << 63 else 0,
        _storable(tree_hash) if type(tree_hash) is str else None,
    )


def _storable(text: str) -> str:
    """``text`` with each lone surrogate (a JSON "\\ud800", which no UTF-8 holds,
    nor so SQLite) as "?", as ijson's C parser gives them."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


class _Decoder:
    """names.decode of the description SQLite asks about, once for its three
    questions (path, parent, mtime), which it asks in a row."""

    def __init__(self) -> None:
        self._description: object = None
        self._decoded: tuple[str | None, str | None, float | None] = (None, None, None)

    def _of(self, description: object) -> tuple[str | None, str | None, float | None]:
        if description != self._description or description is None:
            decoded = names.decode(description) if isinstance(description, str) else None
            self._decoded = (None, None, None) if decoded is None else (decoded[0], parent_of(decoded[0]), decoded[1])
            self._description = description
        return self._decoded

    def path(self, description: object) -> str | None:
        return self._of(description)[0]

    def parent(self, description: object) -> str | None:
        return self._of(description)[1]

    def mtime(self, description: object) -> float | None:
        return self._of(description)[2]


def _register_functions(db: sqlite3.Connection) -> None:
    decoder = _Decoder()
    db.create_function("decoded_path", 1, decoder.path)
    db.create_function("decoded_parent", 1, decoder.parent)
    db.create_function("decoded_mtime", 1, decoder.mtime)
    db.create_function("is_manifest", 1, _is_manifest, deterministic=True)
    db.create_function("parent_of", 1, parent_of, deterministic=True)
    db.create_function("parse_iso", 1, _parse_iso, deterministic=True)
    db.create_function("compact_iso", 1, _compact_iso, deterministic=True)


def _is_manifest(path: str | None) -> bool:
    return path is not None and manifest.is_manifest(path)
