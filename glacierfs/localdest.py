"""A local directory as an export's destination: bytes go to a hidden
temporary name beside the final one, and only verified bytes are renamed into
place, with the archive's mtime and mode. A full disk is ``NoSpace``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from glacierfs import errors
from glacierfs.cache import pwrite_all
from glacierfs.exportstate import Item
from glacierfs.treehash import file_tree_hash

TEMP_SUFFIX = ".glacierfs-export"
SAME, DIFFERENT, ABSENT = "same", "different", "absent"


def _no_space(error: OSError) -> errors.GlacierFSError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.NoSpace(f"the destination is full: {error}")
    return errors.GlacierFSError(f"{error.strerror}: {error.filename or ''}")


class LocalDestination:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def final(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def compare(self, rel: str, item: Item) -> str:
        """Whether what is at ``rel`` already is the item (SAME), something else, or nothing."""
        path = self.final(rel)
        try:
            if item.is_dir:
                return SAME if path.is_dir() else (DIFFERENT if path.exists() or path.is_symlink() else ABSENT)
            if path.is_symlink() or not path.is_file():
                return DIFFERENT if path.exists() or path.is_symlink() else ABSENT
            if path.stat().st_size != item.size:
                return DIFFERENT
            if item.size == 0:
                return SAME
            return SAME if item.tree_hash and file_tree_hash(path) == item.tree_hash else DIFFERENT
        except OSError as error:
            raise _no_space(error) from error

    def still_there(self, rel: str, item: Item) -> bool:
        """What an earlier run wrote (and synced) is still there, by size and mtime:
        a rerun must not read terabytes back to skip them."""
        try:
            found = self.final(rel).stat()
        except FileNotFoundError:
            return False
        except OSError as error:
            raise _no_space(error) from error
        return found.st_size == item.size and found.st_mtime_ns == item.mtime_ns

    def make_dir(self, rel: str) -> None:
        try:
            self.final(rel).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _no_space(error) from error

    def set_dir_times(self, rel: str, item: Item) -> None:
        """After everything inside was written (writing changes a directory's mtime)."""
        path = self.final(rel)
        try:
            os.utime(path, ns=(item.mtime_ns, item.mtime_ns))
            os.chmod(path, (item.mode & 0o7777) | 0o700)
        except OSError as error:
            raise _no_space(error) from error

    def temp(self, rel: str) -> Path:
        final = self.final(rel)
        return final.with_name(f".{final.name}{TEMP_SUFFIX}")

    def partial_tree_hash(self, rel: str, first: int, last: int) -> str | None:
        """The tree hash of bytes ``first``..``last`` of what an earlier run left
        of a large archive, to check a range it verified before trusting it again."""
        try:
            temp = self.temp(rel)
            if temp.stat().st_size <= last:
                return None
            return file_tree_hash(temp, first, last + 1)
        except OSError:
            return None

    def begin(self, rel: str, item: Item, resume: bool = False) -> LocalSink:
        """Where an archive's bytes go until they are verified: a hidden name
        beside the final one; with ``resume``, what an earlier run left there
        is kept (a large archive's verified ranges)."""
        final = self.final(rel)
        temp = self.temp(rel)
        flags = os.O_WRONLY | os.O_CREAT | (0 if resume else os.O_TRUNC)
        try:
            try:
                fd = os.open(temp, flags, 0o600)
            except FileNotFoundError:  # write_local made every directory; one was removed since
                final.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(temp, flags, 0o600)
            if resume:
                os.ftruncate(fd, item.size)  # what was there may be longer (another archive then)
            return LocalSink(fd, temp, final, item)
        except OSError as error:
            raise _no_space(error) from error

    def empty_file(self, rel: str, item: Item) -> None:
        self.begin(rel, item).commit()


class LocalSink:
    """One archive on its way to a local file; commit() only after verification."""

    def __init__(self, fd: int, temp: Path, final: Path, item: Item) -> None:
        self.fd, self.temp, self.final, self.item = fd, temp, final, item

    def write(self, data: bytes, offset: int) -> None:
        try:
            pwrite_all(self.fd, data, offset)
        except OSError as error:
            raise _no_space(error) from error

    def commit(self) -> None:
        """Give the verified temporary file its time and mode, then its name."""
        try:
            os.fsync(self.fd)
            os.utime(self.fd, ns=(self.item.mtime_ns, self.item.mtime_ns))
            os.chmod(self.fd, self.item.mode & 0o7777 or 0o644)
            os.replace(self.temp, self.final)
        except OSError as error:
            self.abort()
            raise _no_space(error) from error
        os.close(self.fd)

    def abort(self) -> None:
        os.close(self.fd)
        self.temp.unlink(missing_ok=True)

    def keep(self) -> None:
        """Stop, keeping the temporary file: a rerun goes on from its verified ranges."""
        os.close(self.fd)
