"""The FUSE operations: POSIX calls in, GlacierFS calls out, errno back.

The only module that imports the FUSE binding, and the one place project
errors become errno. Any other exception is logged with its traceback and
answered EIO, since the binding would otherwise answer EINVAL.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import itertools
import logging
import os
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# scripts/setup builds a libfuse with passthrough into the environment when the
# system's is older than 3.17; the binding loads the library named here.
BUNDLED_LIBFUSE = Path(sys.prefix) / "lib" / "glacierfs" / "libfuse3.so.4"
if "FUSE_LIBRARY_PATH" not in os.environ and BUNDLED_LIBFUSE.exists():
    os.environ["FUSE_LIBRARY_PATH"] = str(BUNDLED_LIBFUSE)

# mfusepy, not fusepy: fusepy has neither init_with_config nor libfuse 3 support.
import mfusepy as fuse  # noqa: E402

# After FUSE_LIBRARY_PATH is set: the binding loads libfuse when imported.
from glacierfs import errors, processes  # noqa: E402
from glacierfs.catalog import DIRECTORY  # noqa: E402
from glacierfs.control import Control  # noqa: E402
from glacierfs.handles import Closer  # noqa: E402
from glacierfs.listing import DirectoryListing, Named, Stat  # noqa: E402
from glacierfs.vfs import GlacierFS  # noqa: E402

log = logging.getLogger(__name__)

FuseOSError = fuse.FuseOSError
Operations = fuse.Operations
overrides = fuse.overrides

F = TypeVar("F", bound=Callable[..., Any])

# The one errno table. Looked up along the exception's class hierarchy, so a
# subclass without a row of its own gets its parent's errno.
ERRNO: dict[type[errors.GlacierFSError], int] = {
    errors.NotFound: errno.ENOENT,
    errors.AlreadyExists: errno.EEXIST,
    errors.NotEmpty: errno.ENOTEMPTY,
    errors.InvalidRequest: errno.EINVAL,
    errors.InvalidName: errno.EINVAL,
    errors.NameTooLong: errno.ENAMETOOLONG,
    errors.BadEncoding: errno.EILSEQ,
    errors.ChecksumMismatch: errno.EIO,
    errors.JobNotReady: errno.EAGAIN,
    errors.ServiceUnavailable: errno.EIO,
    errors.Unreachable: errno.EIO,
    errors.AccessDenied: errno.EACCES,
    errors.ArchiveLocked: errno.EACCES,
    errors.LimitExceeded: errno.ENOSPC,
    errors.TooManyTags: errno.E2BIG,
    errors.FileTooLarge: errno.EFBIG,
    errors.NotSequential: errno.EPERM,
    errors.ReadOnly: errno.EPERM,
    errors.CrossVault: errno.EXDEV,
    errors.NotSupported: errno.EPERM,
    errors.IsADirectory: errno.EISDIR,
    errors.NotADirectory: errno.ENOTDIR,
    errors.Busy: errno.EBUSY,
    errors.NoAttribute: errno.ENODATA,
    errors.UnknownAttribute: errno.ENOTSUP,
    errors.RetrievalBudgetExceeded: errno.EDQUOT,
    errors.RetrievalPolicyRefused: errno.EDQUOT,
    errors.InsufficientCapacity: errno.EAGAIN,
    errors.RetrievalFailed: errno.EIO,
    errors.NoSpace: errno.ENOSPC,
    errors.CacheFull: errno.ENOSPC,
    errors.GlacierFSError: errno.EIO,
}
# Answers so common that logging them above debug would drown the log.
# Logged at debug level only: expected answers, and a lost endpoint (glacier.Reachability logs that once).
QUIET = (errors.NotFound, errors.NoAttribute, errors.UnknownAttribute, errors.AlreadyExists, errors.Unreachable)
# Expected while Glacier prepares a retrieval: worth a line, not a warning.
INFO = (errors.JobNotReady,)


def errno_of(error: errors.GlacierFSError) -> int:
    for kind in type(error).__mro__:
        if kind in ERRNO:
            return ERRNO[kind]
    return errno.EIO


def translated(method: F) -> F:
    """Turn the project's errors into FuseOSError; anything unexpected into EIO."""

    @functools.wraps(method)
    def wrapper(self: GlacierOperations, *args: Any) -> Any:
        try:
            return method(self, *args)
        except FuseOSError:
            raise
        except errors.GlacierFSError as error:
            code = errno_of(error)
            level = (
                logging.DEBUG
                if isinstance(error, QUIET)
                else logging.INFO
                if isinstance(error, INFO)
                else logging.WARNING
            )
            log.log(level, "%s%r: %s (%s)", method.__name__, args[:1], error, errno.errorcode.get(code, code))
            raise FuseOSError(code) from error
        except Exception:
            log.exception("unexpected error in %s%r; answering EIO", method.__name__, args[:1])
            raise FuseOSError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


# utimensat's special nanosecond values, which reach utimens with tv_sec 0.
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

# How long the kernel keeps an entry's name and attributes (mount_options).
ATTR_TIMEOUT = 30.0

# READDIRPLUS, from libfuse's fuse_common.h and fuse.h.
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14
FUSE_READDIR_PLUS = 1 << 0  # readdir's flags: the kernel asked for attributes too
FUSE_FILL_DIR_PLUS = 1 << 1  # the filler's flags: this entry's attributes are complete
DOTS = 2  # "." and ".." take offsets 1 and 2; a directory's entry i takes DOTS + i + 1


def attributes(info: Stat) -> dict[str, int]:
    """The stat of an entry, alike for getattr and for a listing's READDIRPLUS."""
    is_dir = info.kind == DIRECTORY
    return {
        "st_mode": (stat.S_IFDIR if is_dir else stat.S_IFREG) | info.mode,
        "st_nlink": 2 if is_dir else 1,
        "st_size": info.size,
        "st_blocks": (info.size + 511) // 512,
        "st_blksize": 1 << 20,
        "st_uid": info.uid,
        "st_gid": info.gid,
        "st_mtime": info.mtime_ns,
        "st_ctime": info.mtime_ns,
        "st_atime": info.mtime_ns,
    }


# FUSE passthrough: from libfuse's fuse_common.h and the kernel's fuse.h.
FUSE_CAP_PASSTHROUGH = 1 << 29
_FUSE_DEV_IOC_MAGIC = 229


def _iow(number: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (_FUSE_DEV_IOC_MAGIC << 8) | number


FUSE_DEV_IOC_BACKING_OPEN = _iow(1, struct.calcsize("iIQ"))  # struct fuse_backing_map
FUSE_DEV_IOC_BACKING_CLOSE = _iow(2, 4)


class Passthrough:
    """Lets the kernel read a cached archive straight from the cache's own file.

    Otherwise every read of a file not yet in the page cache crosses into this
    process 128 KiB at a time, and the page cache FUSE keeps holds 4 KiB pages
    that copy at about half the speed of a local file's large folios (both
    measured; see README). Needs Linux >= 6.9, libfuse >= 3.17 and CAP_SYS_ADMIN;
    without them reads take the ordinary path. The kernel insists that all open
    files of one inode share a backing file, so backing ids are counted per
    cache file and closed with its last reader.
    """

    def __init__(self, wanted: bool = True) -> None:
        self.wanted = wanted
        self._device: int | None = None
        self._lock = threading.Lock()
        self._ids: dict[tuple[int, int], list[int]] = {}  # cache file -> [backing id, readers]
        self._files: dict[int, tuple[int, int]] = {}  # handle -> cache file

    @property
    def enabled(self) -> bool:
        return self._device is not None

    def negotiate(self, conn: Any) -> None:
        """Ask for passthrough while the connection is set up (init)."""
        if not self.wanted:
            log.info("reads of cached archives pass through this process: --no-passthrough")
            return
        version = (getattr(fuse, "fuse_version_major", 2), getattr(fuse, "fuse_version_minor", 0))
        if version < (3, 17):
            log.info(
                "reads of cached archives pass through this process: FUSE passthrough needs libfuse 3.17 "
                "or later, and this is libfuse %d.%d. In a checkout, scripts/setup builds 3.17 into .venv; "
                "elsewhere install libfuse 3.17 or point FUSE_LIBRARY_PATH at its libfuse3.so.",
                *version,
            )
            return
        if not conn.capable_ext & FUSE_CAP_PASSTHROUGH:
            log.info("reads of cached archives pass through this process: the kernel offers no FUSE passthrough")
            return
        if not _has_cap_sys_admin():
            log.info("reads of cached archives pass through this process: FUSE passthrough needs CAP_SYS_ADMIN")
            return
        conn.want_ext |= FUSE_CAP_PASSTHROUGH
        conn.want |= FUSE_CAP_PASSTHROUGH
        conn.max_backing_stack_depth = 1
        libfuse = fuse._libfuse
        libfuse.fuse_get_session.restype = ctypes.c_void_p
        libfuse.fuse_get_session.argtypes = [ctypes.c_void_p]
        libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
        session = libfuse.fuse_get_session(ctypes.c_void_p(libfuse.fuse_get_context().contents.fuse))
        self._device = libfuse.fuse_session_fd(session)
        log.info("the kernel reads cached archives from the cache's files itself (FUSE passthrough)")

    def serves(self, handle_id: int) -> bool:
        """Whether the kernel reads this open file itself."""
        with self._lock:
            return handle_id in self._files

    def attach(self, handle_id: int, fd: int, fi: Any) -> bool:
        """Have the kernel read the file behind ``handle_id`` from ``fd``; False
        when it cannot (the caller then serves reads itself)."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        with self._lock:
            if self._device is None:
                return False
            known = self._ids.get(key)
            if known is None:
                try:
                    backing_id = fcntl.ioctl(
                        self._device, FUSE_DEV_IOC_BACKING_OPEN, bytearray(struct.pack("iIQ", fd, 0, 0))
                    )
                except OSError as error:
                    log.warning("FUSE passthrough refused a cache file, serving it here: %s", error)
                    return False
                known = self._ids[key] = [backing_id, 0]
            known[1] += 1
            self._files[handle_id] = key
        _set_backing_id(fi, known[0])
        return True

    def detach(self, handle_id: int) -> None:
        with self._lock:
            key = self._files.pop(handle_id, None)
            if key is None:
                return
            known = self._ids[key]
            known[1] -= 1
            if known[1]:
                return
            del self._ids[key]
            assert self._device is not None  # ids exist only once passthrough is on
            try:
                fcntl.ioctl(self._device, FUSE_DEV_IOC_BACKING_CLOSE, bytearray(struct.pack("I", known[0])))
            except OSError as error:
                log.warning("could not close FUSE backing id %d: %s", known[0], error)


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 21))
    return False


def _set_backing_id(fi: Any, backing_id: int) -> None:
    """fuse_file_info.backing_id: libfuse 3.17 puts it after the 32-bit poll_events,
    which mfusepy declares 64 bits wide."""
    if hasattr(type(fi), "backing_id"):
        fi.backing_id = backing_id
        return
    offset = type(fi).poll_events.offset + 4
    ctypes.c_int32.from_address(ctypes.addressof(fi) + offset).value = backing_id


class GlacierOperations(fuse.Operations):
    """Short handlers over GlacierFS. Files opened for writing use direct_io:
    each write(2) reaches us in large requests and never lingers in the page cache.
    Cached archives are read by the kernel itself where it can (Passthrough), else
    through us with the page cache kept: archives are immutable."""

    use_ns = True

    def __init__(
        self,
        vfs: GlacierFS,
        control: Control,
        on_ready: Callable[[], None] | None = None,
        passthrough: bool = True,
    ) -> None:
        self.vfs = vfs
        self.control = control
        self._on_ready = on_ready
        self.passthrough = Passthrough(wanted=passthrough)
        self._listings_lock = threading.Lock()
        self._listings: dict[int, DirectoryListing] = {}  # open directories
        self._listing_ids = itertools.count(1)
        # directory -> (catalog version, when) of the listing the kernel may keep
        self._read_whole: dict[str, tuple[object, float]] = {}

    def _caller(self) -> int | None:
        """The process (thread group) of the call being served; None if FUSE names none."""
        try:
            return processes.process_of(fuse.fuse_get_context()[2])
        except ValueError:  # no FUSE request on this thread (tests drive us directly)
            return None

    @overrides(Operations)
    def init_with_config(self, conn: Any, config: Any) -> None:
        """mfusepy calls this, and not init(), once the connection is set up."""
        if conn is not None:
            self.passthrough.negotiate(conn)
            # READDIRPLUS for every listing, not only its first reply (the kernel's
            # "auto"): `ls -l` reads the whole directory before it stats any entry.
            conn.want &= ~FUSE_CAP_READDIRPLUS_AUTO
            if hasattr(conn, "want_ext"):
                conn.want_ext &= ~FUSE_CAP_READDIRPLUS_AUTO
        self.init("/")

    @overrides(Operations)
    def init(self, path: str) -> None:
        if self._on_ready:
            self._on_ready()

    @overrides(Operations)
    def destroy(self, path: str) -> None:
        """Unmounted: open files are closed or aborted at once, before the
        daemon's other parts stop (assembly.py)."""
        self.vfs.close()

    @overrides(Operations)
    @translated
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        # The kernel's LOOKUP and GETATTR both end here (libfuse's high-level API):
        # the debug log shows which entries a listing left it to ask for.
        log.debug("getattr %s", path)
        return attributes(self.vfs.stat(path))

    @overrides(Operations)
    @translated
    def readdir(self, path: str, fh: int) -> list[str]:
        """Names only; mounted, listings go through readdir_batch (see _GlacierFUSE)."""
        return [".", "..", *self.vfs.list_dir(path)]

    @overrides(Operations)
    @translated
    def opendir(self, path: str, fi: Any = None) -> int:
        """The kernel may keep a directory's entries (cache_readdir) and list it
        again without asking, while the catalog is unchanged since it last read
        them whole and their attributes, read with them, have not expired: past
        that a READDIRPLUS refreshes them all at once, where a kept listing would
        leave a LOOKUP per entry."""
        version = self.vfs.catalog.version()
        listing = self.vfs.open_dir(path)
        now = time.monotonic()
        with self._listings_lock:
            handle = next(self._listing_ids)
            self._listings[handle] = listing
            read = self._read_whole.get(path)
            keep = read is not None and read[0] == version and now - read[1] < ATTR_TIMEOUT
            if not keep:
                self._read_whole[path] = (version, now)
        if fi is not None:
            fi.cache_readdir = 1
            fi.keep_cache = int(keep)
        return handle

    @overrides(Operations)
    @translated
    def releasedir(self, path: str | None, fh: int) -> int:
        with self._listings_lock:
            self._listings.pop(fh, None)
        return 0

    @translated
    def readdir_batch(self, path: str | None, fh: int, position: int) -> Named:
        """The open directory's entries from ``position`` (0: its first, after . and ..)
        to the end of a batch, with their attributes; [] past its last."""
        with self._listings_lock:
            listing = self._listings.get(fh)
        if listing is None:
            raise errors.InvalidRequest(f"readdir of {path} without opendir (handle {fh})")
        return listing.batch_from(position)

    @overrides(Operations)
    @translated
    def mkdir(self, path: str, mode: int) -> int:
        self.vfs.make_dir(path, mode)
        return 0

    @overrides(Operations)
    @translated
    def rmdir(self, path: str) -> int:
        self.vfs.remove_dir(path)
        return 0

    @overrides(Operations)
    @translated
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fi.fh = self.vfs.create(path, mode, self._caller())
        fi.direct_io = 1
        return 0

    @overrides(Operations)
    @translated
    def open(self, path: str, fi: Any) -> int:
        if fi.flags & os.O_ACCMODE != os.O_RDONLY and any(
            self.passthrough.serves(reader) for reader in self.vfs.readers_of(path)
        ):
            # The kernel would refuse this open after we answered it: refuse it first.
            raise errors.Busy(f"{path} is open for reading through FUSE passthrough; close it before replacing it")
        fi.fh = self.vfs.open(path, fi.flags, self._caller())
        cached = self.vfs.cached_fd(fi.fh)
        if cached is not None and self.passthrough.attach(fi.fh, cached, fi):
            return 0
        if self.vfs.keeps_page_cache(fi.fh):
            fi.keep_cache = 1
        else:
            fi.direct_io = 1
        return 0

    @overrides(Operations)
    @translated
    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        """The binding registers read() only for operations that define it;
        _GlacierFUSE then serves reads through read_into instead."""
        buffer = bytearray(size)
        return bytes(buffer[: self.vfs.read_into(fi.fh, memoryview(buffer), offset)])

    @translated
    def read_into(self, path: str, buffer: memoryview, offset: int, fi: Any) -> int:
        """read() into libfuse's own buffer (see _GlacierFUSE)."""
        return self.vfs.read_into(fi.fh, buffer, offset)

    @overrides(Operations)
    @translated
    def write(self, path: str, data: memoryview, offset: int, fi: Any) -> int:
        """``data`` is libfuse's buffer (see _GlacierFUSE), valid until we return."""
        return self.vfs.write(fi.fh, offset, data, self._caller())

    @overrides(Operations)
    @translated
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self.vfs.truncate(path, length, None if fh is None else fh.fh)
        return 0

    @overrides(Operations)
    @translated
    def flush(self, path: str | None, fi: Any) -> int:
        # The file's path below its vault: how /proc names it through any bind mount.
        suffix = os.fsencode("/" + path.lstrip("/").partition("/")[2]) if path else None
        self.vfs.flush(
            fi.fh,
            Closer(
                self._caller(),
                holds=lambda process: None if suffix is None else processes.holds_file(process, suffix),
                descendants=processes.descendants,
                killed=processes.killed_by_signal,
            ),
        )
        return 0

    @overrides(Operations)
    @translated
    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        self.vfs.fsync(fi.fh)
        return 0

    @overrides(Operations)
    @translated
    def release(self, path: str, fi: Any) -> int:
        self.passthrough.detach(fi.fh)
        self.vfs.release(fi.fh)
        return 0

    @overrides(Operations)
    @translated
    def unlink(self, path: str) -> int:
        self.vfs.unlink(path)
        return 0

    @overrides(Operations)
    @translated
    def rename(self, old: str, new: str) -> int:
        self.vfs.rename(old, new)
        return 0

    @overrides(Operations)
    @translated
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Only the modification time is kept. libfuse passes utimensat's special
        values as they are: UTIME_NOW (`touch`) and UTIME_OMIT (`touch -a`)."""
        mtime = times[1] if times else UTIME_NOW
        if mtime != UTIME_OMIT:
            self.vfs.set_times(path, time.time_ns() if mtime == UTIME_NOW else mtime)
        return 0

    @overrides(Operations)
    @translated
    def chmod(self, path: str, mode: int) -> int:
        self.vfs.set_mode(path, mode)
        return 0

    @overrides(Operations)
    @translated
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.vfs.set_owner(path, uid, gid)
        return 0

    @overrides(Operations)
    @translated
    def statfs(self, path: str) -> dict[str, int]:
        return self.vfs.statfs(path)

    @overrides(Operations)
    @translated
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        read_by = "the kernel (FUSE passthrough)" if self.passthrough.enabled else "glacierfs"
        return self.control.get(path, name, read_by=read_by)

    @overrides(Operations)
    @translated
    def listxattr(self, path: str) -> list[str]:
        return self.control.names(path)

    @overrides(Operations)
    @translated
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.control.set(path, name, value)
        return 0

    @overrides(Operations)
    @translated
    def removexattr(self, path: str, name: str) -> int:
        self.control.remove(path, name)
        return 0

    @overrides(Operations)
    @translated
    def symlink(self, target: str, source: str) -> int:
        raise errors.NotSupported(f"{target}: Glacier keeps no symbolic links")

    @overrides(Operations)
    @translated
    def link(self, target: str, source: str) -> int:
        raise errors.NotSupported(f"{target}: Glacier keeps no hard links")

    @overrides(Operations)
    @translated
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise errors.NotSupported(f"{path}: Glacier keeps only regular files and directories")


def mount_options(allow_other: bool) -> dict[str, Any]:
    """Options measured to make large writes and `ls -l` cheap (see README).

    Attribute and entry timeouts let the kernel answer repeated lookups itself
    (changes made through the mount reach the kernel at once; a rename that a
    manifest restores may show the old name for up to 30 s). The kernel keeps
    listings only as opendir allows (cache_readdir, keep_cache).
    Threads let uploads of several files run at once.
    """
    options: dict[str, Any] = {
        "foreground": True,
        "nothreads": False,
        "fsname": "glacierfs",
        "subtype": "glacierfs",
        "attr_timeout": ATTR_TIMEOUT,
        "entry_timeout": ATTR_TIMEOUT,
        "default_permissions": True,
        # rm of an open file reaches unlink(), which refuses a file being uploaded
        # (EBUSY), rather than a rename to .fuse_hidden and an unlink at release.
        "hard_remove": True,
    }
    if allow_other:
        options["allow_other"] = True
    return options


class _GlacierFUSE(fuse.FUSE):
    """The binding copies each request's data into a new bytes object (write) or
    out of one (read). Handing the handlers libfuse's own buffer instead saves an
    allocation of fresh pages and a copy per request: most of the daemon's cost
    of reading a cached archive, and of a write before it reaches its part."""

    def write(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        source = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.write(decoded, memoryview(source).cast("B"), offset, fip.contents)

    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        target = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.read_into(decoded, memoryview(target).cast("B"), offset, fip.contents)

    def opendir(self, path: bytes, fip: Any) -> int:
        """The binding keeps fuse_file_info from opendir; the kernel's listing cache needs it."""
        fip.contents.fh = self.operations.opendir(path.decode(self.encoding, self.errors), fip.contents)
        return 0

    def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int) -> int:
        """The binding hands libfuse names and modes only, all at once. This hands
        it every entry's whole stat, marked complete (FUSE_FILL_DIR_PLUS), so
        libfuse answers READDIRPLUS with it and the kernel needs no LOOKUP per
        entry; and it streams: each entry carries its offset, so libfuse asks
        again from where a reply filled up, and only one batch is held."""
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        handle = fip.contents.fh
        log.debug("readdir %s from offset %d%s", decoded, offset, " (plus)" if flags & FUSE_READDIR_PLUS else "")
        plus = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
        st = fuse.c_stat()
        st.st_mode = stat.S_IFDIR
        for index, dots in enumerate((b".", b"..")):
            if offset <= index and filler(buf, dots, st, index + 1, 0):
                return 0
        position = max(offset - DOTS, 0)
        while batch := self.operations.readdir_batch(decoded, handle, position):
            for name, info in batch:
                fuse.set_st_attrs(st, attributes(info), use_ns=True)
                if filler(buf, name.encode(self.encoding, self.errors), st, DOTS + position + 1, plus):
                    return 0  # the reply is full: libfuse asks again from this entry
                position += 1
        return 0


def serve(operations: GlacierOperations, mountpoint: str, **options: Any) -> None:
    """Mount and serve until unmounted."""
    _GlacierFUSE(operations, mountpoint, raw_fi=True, **options)
