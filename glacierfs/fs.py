"""The FUSE operations: POSIX calls in, GlacierFS calls out, errno back.

The only module that imports the FUSE binding, and the one place project
errors become errno. Any other exception is logged with its traceback and
answered EIO, since the binding would otherwise answer EINVAL.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import stat
import time
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import mfusepy as fuse
except ImportError:  # pragma: no cover - the maintained fork is a dependency
    import fuse  # type: ignore[no-redef]  # fusepy: same API

from glacierfs import errors
from glacierfs.catalog import DIRECTORY
from glacierfs.vfs import GlacierFS

log = logging.getLogger(__name__)

FUSE = fuse.FUSE
FuseOSError = fuse.FuseOSError
Operations = fuse.Operations
overrides: Callable[[type], Callable[[Any], Any]] = getattr(
    fuse, "overrides", lambda _parent: (lambda method: method)
)

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
    errors.ChecksumMismatch: errno.EIO,
    errors.JobNotReady: errno.EAGAIN,
    errors.ServiceUnavailable: errno.EIO,
    errors.AccessDenied: errno.EACCES,
    errors.LimitExceeded: errno.ENOSPC,
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
    errors.RetrievalRequired: errno.ENOTSUP,
    errors.RetrievalBudgetExceeded: errno.EDQUOT,
    errors.RetrievalFailed: errno.EIO,
    errors.CacheFull: errno.ENOSPC,
    errors.GlacierFSError: errno.EIO,
}
# Answers so common that logging them above debug would drown the log.
QUIET = (errors.NotFound, errors.NoAttribute, errors.UnknownAttribute, errors.AlreadyExists)
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
                logging.DEBUG if isinstance(error, QUIET)
                else logging.INFO if isinstance(error, INFO)
                else logging.WARNING
            )
            log.log(level, "%s%r: %s (%s)", method.__name__, args[:1], error, errno.errorcode.get(code, code))
            raise FuseOSError(code) from error
        except Exception:
            log.exception("unexpected error in %s%r; answering EIO", method.__name__, args[:1])
            raise FuseOSError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


class GlacierOperations(Operations):  # type: ignore[misc]
    """Short handlers over GlacierFS. Files opened for writing use direct_io:
    each write(2) reaches us in large requests and never lingers in the page cache."""

    use_ns = True

    def __init__(self, vfs: GlacierFS, on_ready: Callable[[], None] | None = None) -> None:
        self.vfs = vfs
        self._on_ready = on_ready

    @overrides(Operations)
    def init(self, path: str) -> None:
        if self._on_ready:
            self._on_ready()

    @overrides(Operations)
    def destroy(self, path: str) -> None:
        self.vfs.close()

    @overrides(Operations)
    @translated
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        info = self.vfs.stat(path)
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

    @overrides(Operations)
    @translated
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self.vfs.list_dir(path)]

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
        fi.fh = self.vfs.create(path, mode)
        fi.direct_io = 1
        return 0

    @overrides(Operations)
    @translated
    def open(self, path: str, fi: Any) -> int:
        fi.fh = self.vfs.open(path, fi.flags)
        if self.vfs.keeps_page_cache(fi.fh):
            fi.keep_cache = 1
        else:
            fi.direct_io = 1
        return 0

    @overrides(Operations)
    @translated
    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        return self.vfs.read(fi.fh, size, offset)

    @translated
    def read_into(self, path: str, buffer: memoryview, offset: int, fi: Any) -> int:
        """read() into libfuse's own buffer (see _GlacierFUSE)."""
        return self.vfs.read_into(fi.fh, buffer, offset)

    @overrides(Operations)
    @translated
    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        return self.vfs.write(fi.fh, offset, data)

    @overrides(Operations)
    @translated
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self.vfs.truncate(path, length, None if fh is None else fh.fh)
        return 0

    @overrides(Operations)
    @translated
    def flush(self, path: str, fi: Any) -> int:
        self.vfs.flush(fi.fh)
        return 0

    @overrides(Operations)
    @translated
    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        self.vfs.fsync(fi.fh)
        return 0

    @overrides(Operations)
    @translated
    def release(self, path: str, fi: Any) -> int:
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
        self.vfs.set_times(path, times[1] if times else time.time_ns())
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
        return self.vfs.statfs()

    @overrides(Operations)
    @translated
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.vfs.xattr(path, name)

    @overrides(Operations)
    @translated
    def listxattr(self, path: str) -> list[str]:
        return self.vfs.xattr_names(path)

    @overrides(Operations)
    @translated
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.vfs.set_xattr(path, name, value)
        return 0

    @overrides(Operations)
    @translated
    def removexattr(self, path: str, name: str) -> int:
        raise errors.UnknownAttribute(f"{name}: glacierfs keeps no extended attributes of its own choosing")

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
    manifest restores may show the old name for up to 30 s). libfuse's
    high-level API does not pass cache_readdir on, so listings always reach us.
    Threads let uploads of several files run at once.
    """
    options: dict[str, Any] = {
        "foreground": True,
        "nothreads": False,
        "fsname": "glacierfs",
        "subtype": "glacierfs",
        "attr_timeout": 30.0,
        "entry_timeout": 30.0,
        "default_permissions": True,
    }
    if allow_other:
        options["allow_other"] = True
    return options


class _GlacierFUSE(FUSE):  # type: ignore[misc]
    """The binding's read() takes bytes from the handler and copies them into
    libfuse's buffer; reading straight into that buffer saves an allocation and a
    copy per request, most of the cost of reading a cached archive."""

    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        target = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.read_into(decoded, memoryview(target).cast("B"), offset, fip.contents)


def serve(operations: GlacierOperations, mountpoint: str, **options: Any) -> None:
    """Mount and serve until unmounted."""
    _GlacierFUSE(operations, mountpoint, raw_fi=True, **options)
