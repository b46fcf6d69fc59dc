"""Filesystem semantics over Glacier: vaults, virtual directories, files that
upload as they are written. Knows nothing of FUSE; raises the project's
errors, which fs.py turns into errno.

Lock order: a handle's lock, then the VFS lock (``self._lock``), then the
catalog's own lock. Nothing that talks to Glacier runs under the VFS lock.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from glacierfs import errors, names
from glacierfs.cache import Incoming
from glacierfs.catalog import (
    DIRECTORY,
    EMPTY,
    FILE,
    IN_PROGRESS,
    STORED,
    SUCCEEDED,
    UPLOADING,
    Catalog,
    Entry,
    new_entry,
)
from glacierfs.glacier import GlacierClient
from glacierfs.handles import Closer, Handle, Outcomes, ReadHandle, WriteHandle
from glacierfs.inventory import Inventories
from glacierfs.manifest import ManifestKeeper
from glacierfs.paths import MAX_COMPONENT, check_component, name_of, parent_of, split
from glacierfs.periodic import Periodic
from glacierfs.retrieval import EXPECTED, Retriever, Target
from glacierfs.writer import PartBuffers, Uploader, Writer

log = logging.getLogger(__name__)

VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
READ_AHEAD = 16 << 20  # a cached archive is prefetched this far ahead of its reader
PART_BUFFER_IDLE_SECONDS = 60.0  # idle part buffers are given back to the system after this
XATTR_PREFIX = "user.glacier."
FILE_XATTRS = ("archive-id", "tree-hash", "state", "created")
STATUS_XATTR = XATTR_PREFIX + "status"  # on the mount's root: JSON for `glacierfs status`
RETRIEVE_XATTR = XATTR_PREFIX + "retrieve"  # set to a tier: `glacierfs retrieve`
INVENTORY_XATTR = XATTR_PREFIX + "inventory"  # on a vault: pending job, or the inventory's date
REFRESH_XATTR = XATTR_PREFIX + "refresh"  # set on a vault: `glacierfs refresh`


@dataclass(frozen=True)
class Stat:
    kind: str
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int


def vault_name_problem(name: str) -> str | None:
    """Which naming rule ``name`` breaks, or None."""
    if not 1 <= len(name) <= 255:
        return f"a vault name has 1 to 255 characters, not {len(name)}"
    if not VAULT_NAME.fullmatch(name):
        bad = sorted({char for char in name if not VAULT_NAME.fullmatch(char)})
        return f"a vault name holds only a-z, A-Z, 0-9, '_', '-' and '.', not {''.join(bad)!r}"
    return None


class GlacierFS:
    def __init__(
        self,
        glacier: GlacierClient,
        catalog: Catalog,
        part_size: int,
        concurrency: int,
        keep_replaced: bool = False,
        vault_list_ttl: float = 60.0,
        cleanup_interval: float = 30.0,
        retriever: Retriever | None = None,
        wait_seconds: float = 0.0,
        inventories: Inventories | None = None,
        manifests: ManifestKeeper | None = None,
        cache_writes: bool = False,
    ) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.part_size = part_size
        self.concurrency = concurrency
        self.vault_list_ttl = vault_list_ttl
        self.retriever = retriever
        self.wait_seconds = wait_seconds
        self.inventories = inventories
        self.manifests = manifests
        # --cache-writes: where copies of uploads go (nowhere on a mount that reads nothing).
        self._copies_to = retriever.cache if cache_writes and retriever is not None else None
        self.kernel_reads = False  # fs.py: the kernel reads cached archives itself (FUSE passthrough)
        self.started_ns = time.time_ns()
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
        self._lock = threading.RLock()
        self._handles: dict[int, Handle] = {}
        self._ids = itertools.count(1)
        self.outcomes = Outcomes(glacier, catalog, keep_replaced, self._changed, self._lock)
        self._vaults_listed_at = 0.0
        self._vault_list_failing = False  # logged once per outage
        for entry in catalog.drop_unfinished():
            log.warning("%s/%s was being uploaded when glacierfs stopped; it was never stored", entry.vault, entry.path)
        # The janitor's first round aborts the multipart uploads such a stop left open.
        # Part buffers pass from one file to the next (see writer.PartBuffers).
        self._part_buffers = PartBuffers(part_size, keep=concurrency + 1)
        self._janitor = Periodic("janitor", cleanup_interval, self._tidy)
        self._janitor.start()

    def close(self) -> None:
        """Unmounted. An upload still open for writing is unfinished (the daemon
        was signalled, or the system shuts down): abort it, never complete it.
        Repairs a full disk held back get a last try; what is left is logged."""
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            if isinstance(handle, WriteHandle):
                handle.abort("glacierfs was unmounted while the file was open for writing")
            handle.close()
        self._executor.shutdown(wait=True)
        self._janitor.stop()
        self.outcomes.retry()
        for waiting in self.outcomes.pending:
            log.error(
                "unmounted before there was room to %s; an archive left in Glacier comes back with "
                "the next inventory (under a name with .older- if the name is taken)",
                waiting,
            )
        self.abort_abandoned_uploads()
        if self.manifests is not None:
            try:
                self.manifests.stop()  # writes the manifests of vaults changed since the last one
            except errors.GlacierFSError as error:
                log.error("could not write the vaults' manifests at unmount: %s", error)

    def _tidy(self) -> None:
        self.outcomes.retry()
        self.abort_abandoned_uploads()
        self._part_buffers.trim(idle_seconds=PART_BUFFER_IDLE_SECONDS)

    def abort_abandoned_uploads(self) -> None:
        """Abort multipart uploads the catalog knows of that no open file owns:
        left by a crash, or by an abort Glacier refused. Until aborted they linger
        (and the service keeps their parts) for 24 hours."""
        # Read the catalog first: an upload started after this read is not looked at,
        # and one read here belongs to an open file until that file is released,
        # completion included.
        recorded = self.catalog.uploads()
        with self._lock:
            owned = {
                handle.writer.uploader.upload_id
                for handle in self._handles.values()
                if isinstance(handle, WriteHandle) and handle.writing
            }
        for upload_id, vault, path, _ in recorded:
            if upload_id in owned:
                continue
            try:
                self.glacier.abort_multipart(vault, upload_id)
                log.info("aborted abandoned multipart upload of %s/%s", vault, path)
            except errors.NotFound:
                pass
            except errors.GlacierFSError as error:
                log.warning("abandoned multipart upload of %s/%s not aborted yet: %s", vault, path, error)
                continue
            self.catalog.forget_upload(upload_id)

    # Lookups --------------------------------------------------------------

    def refresh_vaults(self, force: bool = False) -> list[str]:
        """The vault list from Glacier, at most once per TTL unless forced. While
        Glacier cannot be reached the last list is served (and asked again a TTL
        later), and the outage is logged once, not once per listing."""
        if force or time.monotonic() - self._vaults_listed_at > self.vault_list_ttl:
            try:
                names_now = [vault.name for vault in self.glacier.list_vaults()]
            except errors.ServiceUnavailable as error:
                self._vaults_listed_at = time.monotonic()
                with self._lock:
                    first, self._vault_list_failing = not self._vault_list_failing, True
                if first:
                    log.warning(
                        "cannot list the vaults (%s); serving the last list from the catalog "
                        "until Glacier answers again",
                        error,
                    )
                return self.catalog.vaults()
            self.catalog.set_vaults(names_now)
            self._vaults_listed_at = time.monotonic()
            with self._lock:
                recovered, self._vault_list_failing = self._vault_list_failing, False
            if recovered:
                log.info("Glacier lists the vaults again")
        return self.catalog.vaults()

    def _require_vault(self, vault: str) -> None:
        if not self.catalog.has_vault(vault) and not (
            vault_name_problem(vault) is None and vault in self.refresh_vaults()
        ):
            raise errors.NotFound(f"no vault named {vault!r}")
        if self.inventories is not None:
            with contextlib.suppress(errors.GlacierFSError):  # logged; the catalog serves meanwhile
                self.inventories.seen(vault)

    def _changed(self, vault: str) -> None:
        """The vault's tree changed: its manifest is due once changes settle."""
        if self.manifests is not None:
            self.manifests.changed(vault)

    def _entry(self, vault: str, path: str) -> Entry:
        entry = self.catalog.get(vault, path)
        if entry is None:
            self._require_vault(vault)
            raise errors.NotFound(f"{vault}/{path}")
        return entry

    def _require_parent_dir(self, vault: str, path: str) -> None:
        self._require_vault(vault)
        parent = parent_of(path)
        if parent:
            entry = self.catalog.get(vault, parent)
            if entry is None:
                raise errors.NotFound(f"{vault}/{parent}")
            if not entry.is_dir:
                raise errors.NotADirectory(f"{vault}/{parent} is a file")

    def _writing(self, vault: str, path: str) -> WriteHandle | None:
        with self._lock:
            for handle in self._handles.values():
                if isinstance(handle, WriteHandle) and handle.writing and (handle.vault, handle.path) == (vault, path):
                    return handle
        return None

    def readers_of(self, path: str) -> list[int]:
        """The open read handles of ``path``."""
        vault, rel = split(path)
        with self._lock:
            return [
                handle_id
                for handle_id, handle in self._handles.items()
                if isinstance(handle, ReadHandle) and (handle.vault, handle.path) == (vault, rel)
            ]

    def stat(self, path: str) -> Stat:
        vault, rel = split(path)
        if vault is None:
            return Stat(DIRECTORY, 0, self.started_ns, 0o755, os.getuid(), os.getgid())
        if not rel:
            self._require_vault(vault)
            return Stat(DIRECTORY, 0, self.started_ns, 0o755, os.getuid(), os.getgid())
        entry = self._entry(vault, rel)
        size = entry.size
        writing = self._writing(vault, rel)
        if writing is not None:
            size = writing.size
        return Stat(entry.kind, size, entry.mtime_ns, entry.mode, entry.uid, entry.gid)

    def list_dir(self, path: str) -> list[str]:
        vault, rel = split(path)
        if vault is None:
            return self.refresh_vaults()
        if rel:
            entry = self._entry(vault, rel)
            if not entry.is_dir:
                raise errors.NotADirectory(path)
        else:
            self._require_vault(vault)
        return self.catalog.child_names(vault, rel)

    # Directories and vaults -----------------------------------------------

    def make_dir(self, path: str, mode: int) -> None:
        vault, rel = split(path)
        if vault is None:
            raise errors.AlreadyExists("/")
        if not rel:
            problem = vault_name_problem(vault)
            if problem:
                raise errors.InvalidName(f"cannot create vault {vault!r}: {problem}")
            if vault in self.refresh_vaults():
                raise errors.AlreadyExists(f"vault {vault!r} exists")
            self.glacier.create_vault(vault)
            self.catalog.add_vault(vault)
            if self.inventories is not None:
                self.inventories.created_here(vault)
            log.info("created vault %s", vault)
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
            self._require_vault(vault)
            if not self.catalog.vault_is_empty(vault):
                raise errors.NotEmpty(f"vault {vault} still holds files or directories")
            try:
                self.glacier.delete_vault(vault)
            except errors.NotEmpty as error:
                raise errors.NotEmpty(
                    f"Glacier refuses to delete vault {vault}: it held archives at its last "
                    f"inventory or was written since ({error})"
                ) from error
            self.catalog.remove_vault(vault)
            log.info("deleted vault %s", vault)
            return
        entry = self._entry(vault, rel)
        if not entry.is_dir:
            raise errors.NotADirectory(path)
        if self.catalog.has_children(vault, rel):
            raise errors.NotEmpty(path)
        self.catalog.delete(vault, rel)
        self._changed(vault)

    # Files ----------------------------------------------------------------

    def _file_path(self, path: str) -> tuple[str, str]:
        vault, rel = split(path)
        if vault is None or not rel:
            raise errors.NotSupported(
                f"{path}: only vaults (directories) live at the top of the mount; put files inside a vault"
            )
        return vault, rel

    def _new_handle(self, vault: str, rel: str, replaces: list[Entry], opener: int | None) -> int:
        final = "/".join(filter(None, [parent_of(rel), names.likely_final_name(name_of(rel))]))
        description = names.encode(final, time.time())
        if not names.fits(final):
            raise errors.NameTooLong(f"{vault}/{rel}: the path does not fit Glacier's 1,024-character description")
        copy = Incoming(self._copies_to) if self._copies_to is not None else None
        uploader = Uploader(
            self.glacier,
            vault,
            description,
            self.part_size,
            self._executor,
            self.concurrency,
            on_initiate=lambda upload_id: self.catalog.record_upload(upload_id, vault, rel, self.part_size),
            on_end=self.catalog.forget_upload,
            tee=copy.write if copy else None,
            buffers=self._part_buffers,
        )
        return self._add_handle(WriteHandle(vault, rel, Writer(uploader), self.outcomes, opener, replaces, copy=copy))

    def create(self, path: str, mode: int, opener: int | None = None) -> int:
        """A new file, or an existing one truncated (O_CREAT): ``opener`` is the
        process that asked, for the commit rule (see handles)."""
        vault, rel = self._file_path(path)
        check_component(rel)
        self._require_parent_dir(vault, rel)
        if not names.fits(rel):
            raise errors.NameTooLong(f"{path}: the path does not fit Glacier's 1,024-character description")
        existing = self.catalog.get(vault, rel)
        if existing is not None and existing.is_dir:
            raise errors.IsADirectory(path)
        if self._writing(vault, rel):
            raise errors.Busy(f"{path} is being uploaded by another open file")
        if existing is None:
            self.catalog.put(new_entry(vault, rel, FILE, mode).but(state=UPLOADING))
        return self._new_handle(vault, rel, [existing] if existing is not None and existing.archive_id else [], opener)

    def open(self, path: str, flags: int, opener: int | None = None) -> int:
        vault, rel = self._file_path(path)
        entry = self._entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        access = flags & os.O_ACCMODE
        if access == os.O_RDONLY:
            return self._add_handle(self._open_for_reading(path, entry))
        if self._writing(vault, rel):
            raise errors.Busy(f"{path} is being uploaded by another open file")
        if entry.archive_id and not flags & os.O_TRUNC:
            raise errors.ReadOnly(
                f"{path} is a stored archive and archives are immutable: open it with O_TRUNC to replace it"
            )
        return self._new_handle(vault, rel, [entry] if entry.archive_id else [], opener)

    def _add_handle(self, handle: Handle) -> int:
        with self._lock:
            handle_id = next(self._ids)
            self._handles[handle_id] = handle
        return handle_id

    def _target(self, entry: Entry, offset: int | None = None) -> Target:
        assert self.retriever is not None and entry.archive_id is not None
        if offset is None:
            return self.retriever.whole(entry.vault, entry.archive_id, entry.size, entry.tree_hash)
        return self.retriever.block(entry.vault, entry.archive_id, entry.size, entry.tree_hash, offset)

    def _open_for_reading(self, path: str, entry: Entry) -> ReadHandle:
        handle = ReadHandle(entry.vault, entry.path)
        if entry.state == EMPTY:
            return handle
        if not entry.archive_id or self._writing(entry.vault, entry.path):
            raise errors.Busy(f"{path} is still being uploaded; read it once it is stored")
        if self.retriever is None:
            raise errors.RetrievalRequired(f"{path}: this mount reads nothing from Glacier")
        if self.retriever.is_ranged(entry.size):
            cached = self.retriever.open_cached(self._target(entry))
            if cached is None:
                handle.ranged = entry  # blocks are retrieved as reads reach them
            handle.reader = cached
            return handle
        handle.reader = self.retriever.fetch(self._target(entry), path, self.wait_seconds)
        return handle

    def keeps_page_cache(self, handle_id: int) -> bool:
        """Cached archives are immutable: the kernel may keep their pages."""
        handle = self._handle(handle_id)
        return isinstance(handle, ReadHandle) and handle.ranged is None

    def cached_fd(self, handle_id: int) -> int | None:
        """The descriptor of the whole archive's cache file, for the kernel to read
        itself; None unless the handle reads one."""
        handle = self._handle(handle_id)
        if isinstance(handle, ReadHandle) and handle.reader is not None:
            return handle.reader.fileno()
        return None

    def _handle(self, handle_id: int) -> Handle:
        with self._lock:
            handle = self._handles.get(handle_id)
        if handle is None:
            raise errors.NotFound(f"no open file {handle_id}")
        return handle

    def _write_handle(self, handle_id: int) -> WriteHandle:
        handle = self._handle(handle_id)
        if not isinstance(handle, WriteHandle):
            raise errors.ReadOnly(f"{handle.vault}/{handle.path} was opened for reading")
        return handle

    def read_into(self, handle_id: int, buffer: memoryview, offset: int) -> int:
        """Read into ``buffer`` at ``offset``; the count read (short only at the end
        of the file, or of a block of a large archive)."""
        handle = self._handle(handle_id)
        if not isinstance(handle, ReadHandle):
            raise errors.ReadOnly(f"{handle.vault}/{handle.path} is open for writing only while it uploads")
        if handle.reader is not None:
            fd = handle.reader.fileno()
            # FUSE asks in 128 KiB pieces, one after another: each time a read enters
            # a new READ_AHEAD step, have the disk fetch the two steps after it meanwhile.
            if offset == 0 or offset // READ_AHEAD != (offset + len(buffer)) // READ_AHEAD:
                os.posix_fadvise(fd, (offset // READ_AHEAD + 1) * READ_AHEAD, 2 * READ_AHEAD, os.POSIX_FADV_WILLNEED)
            return os.preadv(fd, [buffer], offset)
        entry = handle.ranged
        if entry is None or offset >= entry.size:
            return 0
        # A large archive: read from the aligned block holding offset.
        target = self._target(entry, offset)
        with handle.lock:
            block = handle.blocks.get(target.first)
            if block is None:
                assert self.retriever is not None  # a ranged handle exists only with one
                block = self.retriever.fetch(target, f"{handle.vault}/{handle.path}", self.wait_seconds)
                handle.blocks[target.first] = block
        wanted = min(len(buffer), target.last + 1 - offset)
        return os.preadv(block.fileno(), [buffer[:wanted]], offset - target.first)

    def write(self, handle_id: int, offset: int, data: bytes | memoryview, process: int | None = None) -> int:
        return self._write_handle(handle_id).write(offset, data, process)

    def truncate(self, path: str, length: int, handle_id: int | None = None) -> None:
        if handle_id is not None:
            handle = self._handle(handle_id)
            if isinstance(handle, WriteHandle):
                handle.truncate(length)
                return
        vault, rel = self._file_path(path)
        writing = self._writing(vault, rel)
        if writing is not None:
            writing.truncate(length)
            return
        entry = self._entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        if length == entry.size:
            return
        if length == 0:
            # Truncating a stored file to nothing replaces it with an empty file.
            self.catalog.put(entry.but(size=0, state=EMPTY, archive_id=None, tree_hash=None, created=None))
            self._changed(vault)
            self.outcomes.retire(entry)
            return
        raise errors.ReadOnly(f"{path}: archives are immutable; only truncation to 0 or to its own size works")

    def flush(self, handle_id: int, closer: Closer | None = None) -> None:
        """A close(): it completes the upload when it is the file's last (see
        handles), and then fails if the archive did not reach Glacier."""
        handle = self._handle(handle_id)
        if isinstance(handle, WriteHandle):
            handle.flush(closer or Closer(None, lambda _process: None))

    def fsync(self, handle_id: int) -> None:
        handle = self._handle(handle_id)
        if isinstance(handle, WriteHandle):
            handle.fsync()

    def release(self, handle_id: int) -> None:
        with self._lock:
            handle = self._handles.pop(handle_id, None)
        if handle is None:
            return
        if isinstance(handle, WriteHandle):
            handle.release()
        handle.close()

    def unlink(self, path: str) -> None:
        vault, rel = self._file_path(path)
        entry = self._entry(vault, rel)
        if entry.is_dir:
            raise errors.IsADirectory(path)
        if self._writing(vault, rel):
            raise errors.Busy(
                f"{path} is being uploaded; close it first (removing it would pay for an upload and its early deletion)"
            )
        if entry.archive_id:
            self.outcomes.delete_archive(entry)
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
        source = self._entry(vault, old_rel)
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
            if self._writing(vault, new_rel):
                raise errors.Busy(f"{new} is being uploaded")
        with self._lock:  # the name and the open files' paths move together (see handles)
            self.catalog.rename(vault, old_rel, new_rel)
            writing = None
            for handle in self._handles.values():
                if handle.vault != vault:
                    continue
                if handle.path == old_rel:
                    handle.path = new_rel
                    if isinstance(handle, WriteHandle) and handle.writing:
                        writing = handle
                elif handle.path.startswith(old_rel + "/"):
                    handle.path = new_rel + handle.path[len(old_rel) :]
            if writing is not None and target is not None and not target.is_dir and target.archive_id:
                # Renamed over while still being written: the old archive goes only once
                # the new one is stored, and comes back under this name if it is not.
                writing.replaces.append(target)
                target = None
        self._changed(vault)
        if target is not None and not target.is_dir:
            self.outcomes.retire(target)

    def set_times(self, path: str, mtime_ns: int) -> None:
        vault, rel = split(path)
        if vault is None or not rel:
            return  # the root and vaults have no times of their own to keep
        entry = self._entry(vault, rel)
        self.catalog.put(entry.but(mtime_ns=mtime_ns))
        self._changed(vault)

    def set_mode(self, path: str, mode: int) -> None:
        vault, rel = split(path)
        if vault is None or not rel:
            # The root and vaults keep 0755; `cp -a`/`rsync -a` into a vault chmod it
            # and must not fail for it.
            self.stat(path)
            log.debug("chmod %o of %s ignored: the root and vaults keep their mode", mode, path)
            return
        entry = self._entry(vault, rel)
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
        entry = self._entry(vault, rel)
        self.catalog.put(entry.but(uid=entry.uid if uid < 0 else uid, gid=entry.gid if gid < 0 else gid))
        self._changed(vault)

    # Whole mount ------------------------------------------------------------

    def statfs(self) -> dict[str, int]:
        used, files = self.catalog.stored_totals()
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

    # Extended attributes -----------------------------------------------------

    def _file_xattrs(self, entry: Entry) -> dict[str, str]:
        state = entry.state
        if self._writing(entry.vault, entry.path):
            state = UPLOADING
        elif state == STORED and entry.archive_id and self.retriever is not None:
            state = self.retriever.describe(entry.archive_id)
        values = {"state": state}
        if entry.archive_id:
            values["archive-id"] = entry.archive_id
        if entry.tree_hash:
            values["tree-hash"] = entry.tree_hash
        if entry.created:
            values["created"] = entry.created
        return values

    def xattr_names(self, path: str) -> list[str]:
        vault, rel = split(path)
        if vault is not None and not rel and self.inventories is not None:
            self._require_vault(vault)
            return [INVENTORY_XATTR]
        if vault is None or not rel:
            self.stat(path)
            return []
        entry = self._entry(vault, rel)
        if entry.is_dir:
            return []
        return [XATTR_PREFIX + name for name in self._file_xattrs(entry)]

    def xattr(self, path: str, name: str) -> bytes:
        if name == STATUS_XATTR and split(path)[0] is None:
            return json.dumps(self.status()).encode()
        if name != INVENTORY_XATTR and (
            not name.startswith(XATTR_PREFIX) or name[len(XATTR_PREFIX) :] not in FILE_XATTRS
        ):
            raise errors.UnknownAttribute(name)
        vault, rel = split(path)
        if vault is not None and not rel and name == INVENTORY_XATTR and self.inventories is not None:
            self._require_vault(vault)
            return self.inventories.describe(vault).encode()
        if vault is None or not rel:
            self.stat(path)
            raise errors.NoAttribute(f"{path} has no {name}")
        entry = self._entry(vault, rel)
        value = self._file_xattrs(entry).get(name[len(XATTR_PREFIX) :]) if not entry.is_dir else None
        if value is None:
            raise errors.NoAttribute(f"{path} has no {name}")
        return value.encode()

    def set_xattr(self, path: str, name: str, value: bytes) -> None:
        """Only the commands: ``user.glacier.retrieve`` = TIER on a file thaws it;
        ``user.glacier.refresh`` on a vault asks for a new inventory."""
        vault, rel = split(path)
        if name == REFRESH_XATTR and vault is not None and not rel and self.inventories is not None:
            self._require_vault(vault)
            self.inventories.refresh(vault, force=True)
            return
        if name != RETRIEVE_XATTR:
            raise errors.UnknownAttribute(f"{name}: glacierfs keeps no extended attributes of its own choosing")
        vault, rel = self._file_path(path)
        entry = self._entry(vault, rel)
        if entry.is_dir or not entry.archive_id:
            return  # nothing in Glacier to retrieve
        if self.retriever is None:
            raise errors.RetrievalRequired(f"{path}: this mount reads nothing from Glacier")
        tier = value.decode(errors="replace").strip() or self.retriever.tier
        if tier not in EXPECTED:
            raise errors.InvalidRequest(f"{tier!r} is not a tier: Expedited, Standard or Bulk")
        self.retriever.request(self._target(entry), explicit=True, tier=tier)

    def status(self) -> dict[str, object]:
        """What `glacierfs status` shows: uploads, jobs in flight, cache, budget."""
        with self._lock:
            writing = [h for h in self._handles.values() if isinstance(h, WriteHandle) and h.writing]
        uploads = [
            {"path": f"{h.vault}/{h.path}", "bytes": h.size, "parts_sent": h.writer.uploader.parts_done}
            for h in writing
        ]
        result: dict[str, object] = {
            "uploads": uploads,
            "part_size": self.part_size,
            "held_back": self.outcomes.pending,
        }
        result["gone_vaults"] = [
            {"name": name, "since": since, "entries": kept} for name, since, kept in self.catalog.gone_vaults()
        ]
        if self.retriever is not None:
            result["jobs"] = [
                {
                    "job_id": job.job_id,
                    "vault": job.vault,
                    "archive_id": job.archive_id,
                    "tier": job.tier,
                    "bytes": job.size,
                    "requested": job.requested,
                    "status": job.status,
                }
                for job in self.catalog.jobs_with_status(IN_PROGRESS, SUCCEEDED)
            ]
            used, entries = self.retriever.cache.usage()
            result["cache"] = {
                "bytes": used,
                "entries": entries,
                "limit": self.retriever.cache.size_limit,
                "read_by": "the kernel (FUSE passthrough)" if self.kernel_reads else "glacierfs",
            }
            bytes_left, jobs_left = self.retriever.budget_left()
            result["budget"] = {
                "bytes_left": bytes_left,
                "jobs_left": jobs_left,
                "max_bytes": self.retriever.max_bytes,
                "max_jobs": self.retriever.max_jobs,
            }
        return result
