"""Filesystem semantics over Glacier: vaults, virtual directories, files that
upload as they are written. Knows nothing of FUSE; raises the project's
errors, which fs.py turns into errno.

The namespace lives here; open files are handles.py's (kept in openfiles.py),
what becomes of an upload is outcomes.py's, what to fetch and whether to wait
is retrieval.py's, and the extended attributes are control.py's.

Lock order: a handle's lock, then the namespace lock (``open_files.lock``),
then the catalog's own lock. Nothing that talks to Glacier runs under the
namespace lock.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from glacierfs import errors, names, processes
from glacierfs.cache import Incoming
from glacierfs.catalog import DIRECTORY, EMPTY, FILE, QUEUED, UPLOADING, Catalog, Entry, UploadTrail, new_entry
from glacierfs.deletions import Deletions
from glacierfs.glacier import GlacierClient
from glacierfs.handles import Closer, ReadHandle, WriteHandle
from glacierfs.inventory import Inventories
from glacierfs.listing import DirectoryListing, Named, Stat
from glacierfs.manifest import ManifestKeeper
from glacierfs.openfiles import OpenFiles
from glacierfs.options import MountOptions
from glacierfs.outcomes import Outcomes
from glacierfs.paths import MAX_COMPONENT, check_component, name_of, parent_of, split
from glacierfs.retrieval import Retriever
from glacierfs.spool import Spool
from glacierfs.vaults import Vaults
from glacierfs.vaultsettings import VaultSettings
from glacierfs.writeback import UploadQueue
from glacierfs.writer import MAX_PARTS, PartBuffers, Uploader, Writer

log = logging.getLogger(__name__)


def _is_rsync(process: int | None) -> bool:
    """rsync writes into a temporary name it renames at once (names.likely_final_name)."""
    return processes.command_of(process) == "rsync"


def _final_name(rel: str, opener: int | None) -> str:
    """The name a file will keep, as far as can be told when its upload starts."""
    name = name_of(rel)
    return "/".join(filter(None, [parent_of(rel), names.likely_final_name(name) if _is_rsync(opener) else name]))


def _replaced(existing: Entry | None) -> list[Entry]:
    """What a file opened for writing over ``existing`` replaces: the name gets
    it back if the new file is never stored."""
    if existing is not None and (existing.archive_id or existing.state == QUEUED):
        return [existing]
    return []


class GlacierFS:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        options: MountOptions,
        retriever: Retriever,
        inventories: Inventories,
        manifests: ManifestKeeper,
        spool: Spool,
    ) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.options = options
        self.retriever = retriever
        self.manifests = manifests
        self.vaults = Vaults(glacier, catalog, inventories, options.vault_list_ttl)
        self.settings = VaultSettings(glacier)  # a vault's tags, policies and lock (control.py)
        self.open_files = OpenFiles()
        self.deletions = Deletions(glacier, catalog, options.keep_replaced)
        # Part buffers pass from one file to the next (see writer.PartBuffers).
        self.part_buffers = PartBuffers(options.part_size, keep=options.concurrency + 1)
        # Files closed with --write-back, and those a mount with it left queued, go up from here.
        self.queue = UploadQueue(
            glacier,
            catalog,
            spool,
            self.deletions,
            self.open_files.lock,
            manifests.changed,
            transfers=options.transfers,
            settle=options.settle,
            part_size=options.part_size,
            concurrency=options.concurrency,
            part_buffers=self.part_buffers,
            cache=retriever.cache if options.cache_writes else None,
        )
        self.outcomes = Outcomes(catalog, self.deletions, self.queue, manifests.changed, self.open_files.lock)
        # --cache-writes: copies of uploads go to the cache, so reading them back is free.
        self._copies_to = retriever.cache if options.cache_writes else None
        self.started_ns = time.time_ns()
        self._totals_lock = threading.Lock()
        self._totals: tuple[object, dict[str, tuple[int, int]]] | None = None  # (catalog version, per vault)
        self._executor = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="upload")
        for entry in catalog.drop_unfinished():
            log.warning("%s/%s was being uploaded when glacierfs stopped; it was never stored", entry.vault, entry.path)

    def close(self) -> None:
        """Unmounted. An upload still open for writing is unfinished (the daemon
        was signalled, or the system shuts down): abort it, never complete it."""
        for handle in self.open_files.take_all():
            if isinstance(handle, WriteHandle):
                handle.abort("glacierfs was unmounted while the file was open for writing")
            handle.close()
        self._executor.shutdown(wait=True)

    # Lookups --------------------------------------------------------------

    def _changed(self, vault: str) -> None:
        """The vault's tree changed: its manifest is due once changes settle."""
        self.manifests.changed(vault)

    def entry(self, vault: str, path: str) -> Entry:
        entry = self.catalog.get(vault, path)
        if entry is None:
            self.vaults.require(vault)
            raise errors.NotFound(f"{vault}/{path}")
        return entry

    def _require_parent_dir(self, vault: str, path: str) -> None:
        self.vaults.require(vault)
        parent = parent_of(path)
        if parent:
            entry = self.catalog.get(vault, parent)
            if entry is None:
                raise errors.NotFound(f"{vault}/{parent}")
            if not entry.is_dir:
                raise errors.NotADirectory(f"{vault}/{parent} is a file")

    def readers_of(self, path: str) -> list[int]:
        """The open read handles of ``path``."""
        vault, rel = split(path)
        return self.open_files.readers_of(vault or "", rel)

    def stat(self, path: str) -> Stat:
        vault, rel = split(path)
        if vault is None:
            return self._vault_stat()
        if not rel:
            self.vaults.require(vault)
            return self._vault_stat()
        return _stat_of(self.entry(vault, rel), self.open_files.writing(vault, rel))

    def open_dir(self, path: str) -> DirectoryListing:
        """A directory's entries with their attributes, read a batch at a time (see listing)."""
        vault, rel = split(path)
        if vault is None:
            return DirectoryListing.of([(name, self._vault_stat()) for name in self.vaults.names()])
        self._require_dir(vault, rel, path)

        def fetch(after: str, limit: int, skip: int) -> tuple[Named, str]:
            entries = self.catalog.children(vault, rel, after, limit, skip)
            writing = {handle.path: handle for handle in self.open_files.uploads() if handle.vault == vault}
            named = [(entry.name, _stat_of(entry, writing.get(entry.path))) for entry in entries]
            return named, entries[-1].path if entries else after

        return DirectoryListing(fetch)

    def _vault_stat(self) -> Stat:
        return Stat(DIRECTORY, 0, self.started_ns, 0o755, os.getuid(), os.getgid())

    def _require_dir(self, vault: str, rel: str, path: str) -> None:
        if rel:
            if not self.entry(vault, rel).is_dir:
                raise errors.NotADirectory(path)
        else:
            self.vaults.require(vault)

    def list_dir(self, path: str) -> list[str]:
        vault, rel = split(path)
        if vault is None:
            return self.vaults.names()
        self._require_dir(vault, rel, path)
        return self.catalog.child_names(vault, rel)

    # Directories and vaults -----------------------------------------------

    def make_dir(self, path: str, mode: int) -> None:
        vault, rel = split(path)
        if vault is None:
            raise errors.AlreadyExists("/")
        if not rel:
            self.vaults.create(vault)
            return
        check_component(rel)
        self._require_parent_dir(vault, rel)
        if self.catalog.get(vault, rel) is not None:
            raise errors.AlreadyExists(path)
        self.catalog.put(new_entry(vault, rel, DIRECTORY, mode))
        self._changed(vault)

    def remove_dir(self, path: str) -> None:
        vault, rel = split(path)
        if vault is None:
            raise errors.Busy("the mount's root cannot be removed")
        if not rel:
            self.vaults.delete(vault)
            return
        entry = self.entry(vault, rel)
        if not entry.is_dir:
            raise errors.NotADirectory(path)
        if self.catalog.has_children(vault, rel):
            raise errors.NotEmpty(path)
        self.catalog.delete(vault, rel)
        self._changed(vault)

    # Files ----------------------------------------------------------------

    def file_path(self, path: str) -> tuple[str, str]:
        vault, rel = split(path)
        if vault is None or not rel:
            raise errors.NotSupported(
                f"{path}: only vaults (directories) live at the top of the mount; put files inside a vault"
            )
        return vault, rel

    def _new_handle(self, vault: str, rel: str, replaces: list[Entry], opener: int | None, emptied: bool) -> int:
        """``emptied``: created or truncated by the open, a change of its mtime."""
        handle = self._write_handle_for(vault, rel, replaces, opener)
        if emptied:
            handle.modified_ns = time.time_ns()
        return self.open_files.add(handle)

    def _write_handle_for(self, vault: str, rel: str, replaces: list[Entry], opener: int | None) -> WriteHandle:
        if self.options.write_back:
            # Described when its upload starts, after the settle time: by then
            # rsync has renamed its temporary file, and the name is the real one.
            # A large file's upload starts while it is written, under the name
            # it has then (its upload is dropped if that is not the name it keeps).
            spool_file = self.queue.spool.create(self.options.part_size * MAX_PARTS)
            spooled = WriteHandle(vault, rel, spool_file, self.outcomes, opener, replaces)
            self.queue.follow(spool_file, lambda: (spooled.vault, _final_name(spooled.path, opener)))
            return spooled
        final = _final_name(rel, opener)
        description = names.encode(final, time.time())
        if not names.fits(final):
            raise errors.NameTooLong(f"{vault}/{rel}: the path does not fit Glacier's 1,024-character description")
        copy = Incoming(self._copies_to) if self._copies_to is not None else None
        uploader = Uploader(
            self.glacier,
            vault,
            description,
            self.options.part_size,
            self._executor,
            self.options.concurrency,
            trail=UploadTrail(self.catalog, vault, final, self.options.part_size),
            tee=copy.write if copy else None,
            buffers=self.part_buffers,
        )
        return WriteHandle(vault, rel, Writer(uploader), self.outcomes, opener, replaces, copy=copy)

    def create(self, path: str, mode: int, opener: int | None = None) -> int:
        """A new file, or an existing one truncated (O_CREAT): ``opener`` is the
        process that asked, for the commit rule (see handles)."""
        vault, rel = self.file_path(path)
        check_component(rel)
        self._require_parent_dir(vault, rel)
        if not names.fits(rel):
            raise errors.NameTooLong(f"{path}: the path does not fit Glacier's 1,024-character description")
        existing = self.catalog.get(vault, rel)
        if existing is not None and existing.is_dir:
            raise errors.IsADirectory(path)
        if self.open_files.writing(vault, rel):
            raise errors.Busy(f"{path} is being uploaded by another open file")
        if existing is None:
            self.catalog.put(new_entry(vault, rel, FILE, mode).but(state=UPLOADING))
        return self._new_handle(vault, rel, _replaced(existing), opener, emptied=True)

    def open(self, path: str, flags: int, opener: int | None = None) -> int:
        vault, rel = self.file_path(path)
        entry = self.entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        access = flags & os.O_ACCMODE
        if access == os.O_RDONLY:
            return self.open_files.add(self._open_for_reading(path, entry, flags))
        if self.open_files.writing(vault, rel):
            raise errors.Busy(f"{path} is being uploaded by another open file")
        if (entry.archive_id or entry.state == QUEUED) and not flags & os.O_TRUNC:
            what = "queued for upload as an archive" if entry.state == QUEUED else "a stored archive"
            raise errors.ReadOnly(f"{path} is {what}, and archives are immutable: open it with O_TRUNC to replace it")
        return self._new_handle(vault, rel, _replaced(entry), opener, emptied=bool(flags & os.O_TRUNC))

    def _open_for_reading(self, path: str, entry: Entry, flags: int = os.O_RDONLY) -> ReadHandle:
        handle = ReadHandle(entry.vault, entry.path, self.retriever, self.options.wait)
        if entry.state == EMPTY:
            return handle
        if entry.state == QUEUED:  # read from the spool: nothing to retrieve
            handle.reader = self.queue.open(entry.vault, entry.path)
            if handle.reader is not None:
                return handle
            entry = self.entry(entry.vault, entry.path)  # stored a moment ago
        if not entry.archive_id or self.open_files.writing(entry.vault, entry.path):
            raise errors.Busy(f"{path} is still being uploaded; read it once it is stored")
        if flags & os.O_NONBLOCK:
            # `sync FILE` opens so, only to fsync: no retrieval until a read asks for bytes.
            handle.defer(entry)
            return handle
        handle.open(entry)
        return handle

    def keeps_page_cache(self, handle_id: int) -> bool:
        """Cached archives are immutable: the kernel may keep their pages."""
        handle = self.open_files.get(handle_id)
        return isinstance(handle, ReadHandle) and handle.ranged is None

    def cached_fd(self, handle_id: int) -> int | None:
        """The descriptor of the whole archive's cache file, for the kernel to read
        itself; None unless the handle reads one."""
        handle = self.open_files.get(handle_id)
        if isinstance(handle, ReadHandle) and handle.reader is not None:
            return handle.reader.fileno()
        return None

    def _write_handle(self, handle_id: int) -> WriteHandle:
        handle = self.open_files.get(handle_id)
        if not isinstance(handle, WriteHandle):
            raise errors.ReadOnly(f"{handle.vault}/{handle.path} was opened for reading")
        return handle

    def read_into(self, handle_id: int, buffer: memoryview, offset: int) -> int:
        handle = self.open_files.get(handle_id)
        if not isinstance(handle, ReadHandle):
            raise errors.ReadOnly(f"{handle.vault}/{handle.path} is open for writing only while it uploads")
        return handle.read_into(buffer, offset)

    def write(self, handle_id: int, offset: int, data: bytes | memoryview, process: int | None = None) -> int:
        return self._write_handle(handle_id).write(offset, data, process)

    def truncate(self, path: str, length: int, handle_id: int | None = None) -> None:
        if handle_id is not None:
            handle = self.open_files.get(handle_id)
            if isinstance(handle, WriteHandle):
                handle.truncate(length)
                return
        vault, rel = self.file_path(path)
        writing = self.open_files.writing(vault, rel)
        if writing is not None:
            writing.truncate(length)
            return
        entry = self.entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        if length == entry.size:
            return
        if length == 0:
            # Truncating a stored file to nothing replaces it with an empty file.
            with self.open_files.lock:
                entry = self.entry(vault, rel)  # as it is now: a queued file may be stored since
                self.catalog.put(entry.but(size=0, state=EMPTY, archive_id=None, tree_hash=None, created=None))
                queued = self.queue.take(vault, rel)
            if queued is not None:
                self.queue.dispose(queued)
            self._changed(vault)
            self.deletions.retire_entry(entry)
            return
        raise errors.ReadOnly(f"{path}: archives are immutable; only truncation to 0 or to its own size works")

    def flush(self, handle_id: int, closer: Closer | None = None) -> None:
        """A close(): it completes the upload when it is the file's last (see
        handles), and then fails if the archive did not reach Glacier."""
        handle = self.open_files.get(handle_id)
        if isinstance(handle, WriteHandle):
            handle.flush(closer or Closer(None, lambda _process: None))

    def fsync(self, handle_id: int) -> None:
        """Of a file being written: its bytes are durable (in Glacier's parts,
        or --write-back, in the spool). Of a file that is queued (``sync FILE``):
        it is sent now, and this returns once Glacier stored it."""
        handle = self.open_files.get(handle_id)
        if isinstance(handle, WriteHandle):
            handle.fsync()
        else:
            self.queue.wait_stored(handle.vault, handle.path)

    def release(self, handle_id: int) -> None:
        handle = self.open_files.pop(handle_id)
        if handle is None:
            return
        if isinstance(handle, WriteHandle):
            handle.release()
        handle.close()

    def unlink(self, path: str) -> None:
        vault, rel = self.file_path(path)
        entry = self.entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        if self.open_files.writing(vault, rel):
            raise errors.Busy(
                f"{path} is being uploaded; close it first (removing it would pay for an upload and its early deletion)"
            )
        if entry.state == QUEUED:
            with self.open_files.lock:  # against its upload ending now: one or the other
                queued = self.queue.take(vault, rel)
                if queued is not None:
                    self.catalog.delete(vault, rel)
            if queued is not None:
                self.queue.dispose(queued)
                self._changed(vault)
                return
            entry = self.entry(vault, rel)  # stored a moment ago
        if entry.archive_id:
            try:
                self.deletions.delete(vault, entry.archive_id)
            except errors.AccessDenied as error:
                raise self.settings.refused_deletion(path, vault, entry.archive_id, entry.created, error) from error
        self.catalog.delete(vault, rel)
        self._changed(vault)

    def rename(self, old: str, new: str) -> None:
        old_vault, old_rel = split(old)
        new_vault, new_rel = split(new)
        if old_vault is None or new_vault is None or not old_rel or not new_rel:
            raise errors.NotSupported(f"{old} -> {new}: vaults cannot be renamed, and files live inside vaults")
        if old_vault != new_vault:
            raise errors.CrossVault(f"{old} -> {new}: moving between vaults needs a download and an upload")
        vault = old_vault
        source = self.entry(vault, old_rel)
        if old_rel == new_rel:
            return
        if new_rel.startswith(old_rel + "/"):
            raise errors.InvalidRequest(f"cannot move {old} into itself")
        check_component(new_rel)
        self._require_parent_dir(vault, new_rel)
        target = self.catalog.get(vault, new_rel)
        if target is not None:
            if target.is_dir and not source.is_dir:
                raise errors.IsADirectory(new)
            if source.is_dir and not target.is_dir:
                raise errors.NotADirectory(new)
            if target.is_dir and self.catalog.has_children(vault, new_rel):
                raise errors.NotEmpty(new)
            if self.open_files.writing(vault, new_rel):
                raise errors.Busy(f"{new} is being uploaded")
        displaced = None
        with self.open_files.lock:  # the name and the open files' paths move together
            if target is not None and not target.is_dir:
                target = self.catalog.get(vault, new_rel)  # as it is now: a queued file may be stored since
                displaced = self.queue.take(vault, new_rel)  # a queued file renamed over
                # A queued file renamed over a file (an editor's save): what that file
                # held goes once the queued one is stored, not before.
                held = [
                    *(displaced.replaces if displaced else ()),
                    *([target.archive_id] if target and target.archive_id else []),
                ]
                if held and self.queue.store.hand_over(vault, old_rel, held):
                    target, displaced = None, displaced and displaced.but(replaces=())
            self.catalog.rename(vault, old_rel, new_rel)
            writing = self.open_files.move(vault, old_rel, new_rel)
            if writing is not None and target is not None and not target.is_dir and target.archive_id:
                # Renamed over while still being written: the old archive goes only once
                # the new one is stored, and comes back under this name if it is not.
                writing.replaces.append(target)
                target = None
        self._changed(vault)
        if displaced is not None:
            self.queue.dispose(displaced)
        if target is not None and not target.is_dir:
            self.deletions.retire_entry(target)

    def set_times(self, path: str, mtime_ns: int) -> None:
        vault, rel = split(path)
        if vault is None or not rel:
            return  # the root and vaults have no times of their own to keep
        entry = self.entry(vault, rel)
        self.catalog.put(entry.but(mtime_ns=mtime_ns))
        writing = self.open_files.writing(vault, rel)
        if writing is not None:
            writing.times_set()
        self._changed(vault)

    def set_mode(self, path: str, mode: int) -> None:
        vault, rel = split(path)
        if vault is None or not rel:
            # The root and vaults keep 0755; `cp -a`/`rsync -a` into a vault chmod it
            # and must not fail for it.
            self.stat(path)
            log.debug("chmod %o of %s ignored: the root and vaults keep their mode", mode, path)
            return
        entry = self.entry(vault, rel)
        self.catalog.put(entry.but(mode=stat.S_IMODE(mode)))
        self._changed(vault)

    def set_owner(self, path: str, uid: int, gid: int) -> None:
        vault, rel = split(path)
        if vault is None or not rel:
            self.stat(path)
            unchanged = (-1, 0xFFFFFFFF)  # "leave as is", signed or not
            if uid not in (*unchanged, os.getuid()) or gid not in (*unchanged, os.getgid()):
                raise errors.NotSupported(f"{path}: the root and vaults keep their owner")
            return  # chown to the owner they have (`cp -a`, `rsync -a`): nothing to do
        entry = self.entry(vault, rel)
        self.catalog.put(entry.but(uid=entry.uid if uid < 0 else uid, gid=entry.gid if gid < 0 else gid))
        self._changed(vault)

    # Whole mount ------------------------------------------------------------

    def _vault_totals(self) -> dict[str, tuple[int, int]]:
        """(bytes, files) per vault, summed again only once the catalog has changed:
        a `df` in a loop must not sum a million rows each time."""
        version = self.catalog.version()
        with self._totals_lock:
            if self._totals is None or self._totals[0] != version:
                self._totals = (version, self.catalog.vault_totals())
            return self._totals[1]

    def statfs(self, path: str = "/") -> dict[str, int]:
        """A path inside a vault counts that vault's files and bytes, the root every vault's."""
        vault, _ = split(path)
        totals = self._vault_totals()
        if vault is None:
            used, files = sum(size for size, _ in totals.values()), sum(count for _, count in totals.values())
        else:
            used, files = totals.get(vault, (0, 0))
        block = 4096
        free_blocks = (1 << 50) // block  # Glacier has no capacity to speak of
        return {
            "f_bsize": block,
            "f_frsize": block,
            "f_blocks": (used + block - 1) // block + free_blocks,
            "f_bfree": free_blocks,
            "f_bavail": free_blocks,
            "f_files": files + (1 << 32),
            "f_ffree": 1 << 32,
            "f_favail": 1 << 32,
            "f_namemax": MAX_COMPONENT,
        }


def _stat_of(entry: Entry, writing: WriteHandle | None) -> Stat:
    """What a stat and a listing show alike; a file being written shows its
    size and mtime so far."""
    if writing is not None:
        entry = writing.stamped(entry.but(size=writing.size))
    return Stat(entry.kind, entry.size, entry.mtime_ns, entry.mode, entry.uid, entry.gid)
