"""fs.GlacierOperations driven directly, without a mount (fast), against the
in-process emulator."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.assembly import Assembly, assemble
from glacierfs.cache import ContentCache
from glacierfs.catalog import Catalog
from glacierfs.emulator import Emulator
from glacierfs.fs import ERRNO, FuseOSError, GlacierOperations
from glacierfs.glacier import GlacierClient
from glacierfs.handles import Closer
from glacierfs.options import MountOptions
from glacierfs.treehash import tree_hash

from .conftest import MiB, archives, boto_client


class FileInfo:
    """Stands in for libfuse's fuse_file_info."""

    def __init__(self, flags: int = os.O_WRONLY) -> None:
        self.flags = flags
        self.fh = 0
        self.direct_io = 0


@contextlib.contextmanager
def assembled(url: str, where: Path) -> Iterator[Assembly]:
    """The mount's parts as cli.py wires them (a real retriever and cache), without FUSE."""
    glacier = GlacierClient(endpoint_url=url, max_attempts=2)
    with contextlib.ExitStack() as stack:
        catalog = Catalog(where / "catalog.sqlite")
        stack.callback(catalog.close)
        cache = ContentCache(where / "cache", 1 << 30)
        stack.callback(cache.close)
        yield assemble(stack, glacier, catalog, cache, MountOptions(part_size=MiB, concurrency=2, tier="Expedited"))


@pytest.fixture
def ops(inprocess: Emulator, tmp_path: Path) -> Iterator[GlacierOperations]:
    with assembled(inprocess.url, tmp_path) as parts:
        operations = GlacierOperations(parts.vfs, parts.control)
        operations.mkdir("/vault", 0o755)
        yield operations


def write_file(ops: GlacierOperations, path: str, data: bytes, chunk: int = 128 * 1024) -> None:
    fi = FileInfo()
    ops.create(path, 0o644, fi)
    for offset in range(0, len(data), chunk):
        ops.write(path, data[offset : offset + chunk], offset, fi)
    ops.flush(path, fi)
    ops.release(path, fi)


def errno_of(call) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(FuseOSError) as excinfo:
        call()
    return excinfo.value.errno


def test_every_project_error_has_an_errno() -> None:
    from glacierfs import errors

    kinds = [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.GlacierFSError)]
    assert set(kinds) <= set(ERRNO)


def test_root_lists_vaults_and_refuses_files(ops: GlacierOperations) -> None:
    assert ops.readdir("/", 0) == [".", "..", "vault"]
    assert stat.S_ISDIR(ops.getattr("/vault")["st_mode"])
    assert errno_of(lambda: ops.create("/file", 0o644, FileInfo())) == errno.EPERM


def test_invalid_vault_name_is_einval(ops: GlacierOperations) -> None:
    assert errno_of(lambda: ops.mkdir("/bad name", 0o755)) == errno.EINVAL
    assert errno_of(lambda: ops.mkdir("/vault", 0o755)) == errno.EEXIST


def test_written_file_is_stored_with_attributes(ops: GlacierOperations, inprocess: Emulator) -> None:
    data = os.urandom(3 * MiB + 5)
    write_file(ops, "/vault/a.bin", data)
    attrs = ops.getattr("/vault/a.bin")
    assert attrs["st_size"] == len(data) and stat.S_ISREG(attrs["st_mode"])
    assert ops.getxattr("/vault/a.bin", "user.glacier.state") == b"stored"
    assert ops.getxattr("/vault/a.bin", "user.glacier.tree-hash") == tree_hash(data).encode()
    listed = archives(inprocess.url, "vault")
    assert [(a["ArchiveId"].encode(), a["Size"]) for a in listed] == [
        (ops.getxattr("/vault/a.bin", "user.glacier.archive-id"), len(data))
    ]
    assert set(ops.listxattr("/vault/a.bin")) == {
        "user.glacier.state",
        "user.glacier.tree-hash",
        "user.glacier.archive-id",
        "user.glacier.created",
    }


def test_unknown_xattr_is_enotsup_and_absent_one_enodata(ops: GlacierOperations) -> None:
    write_file(ops, "/vault/empty", b"")
    assert errno_of(lambda: ops.getxattr("/vault/empty", "security.capability")) == errno.ENOTSUP
    assert errno_of(lambda: ops.getxattr("/vault/empty", "user.glacier.archive-id")) == errno.ENODATA
    assert ops.getxattr("/vault/empty", "user.glacier.state") == b"empty"


def test_empty_file_lives_in_catalog_only(ops: GlacierOperations, inprocess: Emulator) -> None:
    write_file(ops, "/vault/empty", b"")
    assert ops.getattr("/vault/empty")["st_size"] == 0
    assert archives(inprocess.url, "vault") == []


def test_dup_then_close_before_writing_still_uploads(ops: GlacierOperations) -> None:
    fi = FileInfo()
    ops.create("/vault/redirected", 0o644, fi)
    ops.flush("/vault/redirected", fi)  # the shell closes its first fd before writing
    ops.write("/vault/redirected", b"hello\n", 0, fi)
    ops.flush("/vault/redirected", fi)
    ops.release("/vault/redirected", fi)
    assert ops.getattr("/vault/redirected")["st_size"] == 6
    assert ops.getxattr("/vault/redirected", "user.glacier.state") == b"stored"


def test_state_is_uploading_while_open(ops: GlacierOperations) -> None:
    fi = FileInfo()
    ops.create("/vault/slow", 0o644, fi)
    ops.write("/vault/slow", b"x" * 10, 0, fi)
    assert ops.getxattr("/vault/slow", "user.glacier.state") == b"uploading"
    assert ops.getattr("/vault/slow")["st_size"] == 10
    ops.flush("/vault/slow", fi)
    ops.release("/vault/slow", fi)
    assert ops.getxattr("/vault/slow", "user.glacier.state") == b"stored"


def test_out_of_order_write_and_reopen_without_trunc_are_eperm(ops: GlacierOperations) -> None:
    fi = FileInfo()
    ops.create("/vault/seq", 0o644, fi)
    ops.write("/vault/seq", bytes(2 * MiB + 1), 0, fi)
    assert errno_of(lambda: ops.write("/vault/seq", b"back", 10, fi)) == errno.EPERM
    ops.flush("/vault/seq", fi)
    ops.release("/vault/seq", fi)
    assert errno_of(lambda: ops.open("/vault/seq", FileInfo(os.O_WRONLY | os.O_APPEND))) == errno.EPERM


def test_overwrite_replaces_and_deletes_old_archive(ops: GlacierOperations, inprocess: Emulator) -> None:
    write_file(ops, "/vault/f", b"old")
    fi = FileInfo(os.O_WRONLY | os.O_TRUNC)
    ops.open("/vault/f", fi)
    ops.write("/vault/f", b"new content", 0, fi)
    ops.flush("/vault/f", fi)
    ops.release("/vault/f", fi)
    assert [a["Size"] for a in archives(inprocess.url, "vault")] == [len(b"new content")]


def test_failed_upload_keeps_the_old_file(ops: GlacierOperations, inprocess: Emulator) -> None:
    write_file(ops, "/vault/f", b"old")
    old_id = ops.getxattr("/vault/f", "user.glacier.archive-id")
    fi = FileInfo(os.O_WRONLY | os.O_TRUNC)
    ops.open("/vault/f", fi)
    ops.write("/vault/f", b"new", 0, fi)
    inprocess.settings.fault_rate = 1.0
    assert errno_of(lambda: ops.flush("/vault/f", fi)) == errno.EIO
    inprocess.settings.fault_rate = 0.0
    ops.release("/vault/f", fi)
    assert ops.getxattr("/vault/f", "user.glacier.archive-id") == old_id
    assert ops.getattr("/vault/f")["st_size"] == 3


def test_failed_new_file_is_not_listed(ops: GlacierOperations, inprocess: Emulator) -> None:
    fi = FileInfo()
    ops.create("/vault/new", 0o644, fi)
    ops.write("/vault/new", b"data", 0, fi)
    inprocess.settings.fault_rate = 1.0
    assert errno_of(lambda: ops.flush("/vault/new", fi)) == errno.EIO
    inprocess.settings.fault_rate = 0.0
    ops.release("/vault/new", fi)
    assert ops.readdir("/vault", 0) == [
        ".",
        "..",
    ]
    assert errno_of(lambda: ops.getattr("/vault/new")) == errno.ENOENT


def test_directories_rename_and_remove(ops: GlacierOperations, inprocess: Emulator) -> None:
    ops.mkdir("/vault/a", 0o755)
    ops.mkdir("/vault/a/b", 0o755)
    write_file(ops, "/vault/a/b/f", b"content")
    assert errno_of(lambda: ops.rmdir("/vault/a")) == errno.ENOTEMPTY
    ops.rename("/vault/a", "/vault/c")
    assert ops.readdir("/vault/c/b", 0) == [".", "..", "f"]
    assert errno_of(lambda: ops.getattr("/vault/a/b/f")) == errno.ENOENT
    ops.unlink("/vault/c/b/f")
    ops.rmdir("/vault/c/b")
    ops.rmdir("/vault/c")
    assert archives(inprocess.url, "vault") == []


def test_rename_across_vaults_is_exdev(ops: GlacierOperations) -> None:
    ops.mkdir("/other", 0o755)
    write_file(ops, "/vault/f", b"x")
    assert errno_of(lambda: ops.rename("/vault/f", "/other/f")) == errno.EXDEV


def test_rename_over_file_deletes_its_archive(ops: GlacierOperations, inprocess: Emulator) -> None:
    write_file(ops, "/vault/.target.AbC123", b"new")
    write_file(ops, "/vault/target", b"old!")
    ops.rename("/vault/.target.AbC123", "/vault/target")
    assert [a["Size"] for a in archives(inprocess.url, "vault")] == [3]


def test_links_and_devices_are_refused(ops: GlacierOperations) -> None:
    write_file(ops, "/vault/f", b"x")
    assert errno_of(lambda: ops.symlink("/vault/l", "f")) == errno.EPERM
    assert errno_of(lambda: ops.link("/vault/h", "/vault/f")) == errno.EPERM
    assert errno_of(lambda: ops.mknod("/vault/dev", stat.S_IFCHR | 0o644, 0)) == errno.EPERM


def test_vault_removal(ops: GlacierOperations) -> None:
    write_file(ops, "/vault/f", b"x")
    assert errno_of(lambda: ops.rmdir("/vault")) == errno.ENOTEMPTY
    ops.unlink("/vault/f")
    ops.rmdir("/vault")
    assert ops.readdir("/", 0) == [".", ".."]


def test_times_and_modes_are_kept(ops: GlacierOperations) -> None:
    write_file(ops, "/vault/f", b"x")
    ops.utimens("/vault/f", (0, 1_600_000_000_123_456_789))
    ops.chmod("/vault/f", 0o600)
    attrs = ops.getattr("/vault/f")
    assert attrs["st_mtime"] == 1_600_000_000_123_456_789 and stat.S_IMODE(attrs["st_mode"]) == 0o600


def test_path_too_long_for_description_is_enametoolong(ops: GlacierOperations) -> None:
    deep = "/vault"
    for index in range(4):
        deep += "/" + "d" * 200 + str(index)
        ops.mkdir(deep, 0o755)
    assert errno_of(lambda: ops.create(deep + "/" + "f" * 100, 0o644, FileInfo())) == errno.ENAMETOOLONG
    assert errno_of(lambda: ops.mkdir("/vault/" + "n" * 256, 0o755)) == errno.ENAMETOOLONG


def test_unexpected_exception_is_eio_not_einval(ops: GlacierOperations, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops.vfs, "stat", lambda path: 1 / 0)
    assert errno_of(lambda: ops.getattr("/vault")) == errno.EIO


def test_statfs_reports_stored_bytes(ops: GlacierOperations) -> None:
    write_file(ops, "/vault/f", bytes(10_000))
    info = ops.statfs("/")
    assert (info["f_blocks"] - info["f_bfree"]) * info["f_frsize"] >= 10_000


# The commit rule for shared descriptors (see glacierfs/handles.py), without a mount:
# processes 100 (the opener) and 200 (a child), and which of them still hold the file.


def closer(process: int, holding: set[int]) -> Closer:
    return Closer(process, lambda asked: asked in holding)


def test_a_child_closing_does_not_complete_the_opener_file(ops: GlacierOperations, inprocess: Emulator) -> None:
    vfs = ops.vfs
    handle = vfs.create("/vault/log", 0o644, opener=100)
    vfs.write(handle, 0, b"parent\n", process=100)
    vfs.write(handle, 7, b"child\n", process=200)
    vfs.flush(handle, closer(200, holding={100}))  # the child exits; the parent still holds it
    assert archives(inprocess.url, "vault") == []
    vfs.flush(handle, closer(100, holding={100}))  # the parent closes a duplicate
    assert archives(inprocess.url, "vault") == []
    vfs.write(handle, 13, b"parent again\n", process=100)
    vfs.flush(handle, closer(100, holding=set()))  # its last descriptor
    [stored] = archives(inprocess.url, "vault")
    assert stored["Size"] == 26 and stored["SHA256TreeHash"] == tree_hash(b"parent\nchild\nparent again\n")
    vfs.release(handle)


def test_the_opener_closing_first_waits_for_a_child_that_wrote(ops: GlacierOperations, inprocess: Emulator) -> None:
    vfs = ops.vfs
    handle = vfs.create("/vault/log", 0o644, opener=100)
    vfs.write(handle, 0, b"child\n", process=200)
    vfs.flush(handle, closer(100, holding={200}))  # the parent is done, the child is not
    assert archives(inprocess.url, "vault") == []
    vfs.write(handle, 6, b"more\n", process=200)
    vfs.flush(handle, closer(200, holding=set()))
    assert [a["Size"] for a in archives(inprocess.url, "vault")] == [11]
    vfs.release(handle)


def test_a_release_without_a_flush_changes_nothing(ops: GlacierOperations, inprocess: Emulator) -> None:
    """An open the kernel refused after we answered it (a passthrough conflict)."""
    write_file(ops, "/vault/f", b"old")
    old_id = ops.getxattr("/vault/f", "user.glacier.archive-id")
    fi = FileInfo(os.O_WRONLY | os.O_TRUNC)
    ops.open("/vault/f", fi)
    ops.release("/vault/f", fi)
    assert ops.getxattr("/vault/f", "user.glacier.archive-id") == old_id
    assert ops.getattr("/vault/f")["st_size"] == 3
    assert [a["Size"] for a in archives(inprocess.url, "vault")] == [3]


def test_unmounting_aborts_an_upload_still_open(inprocess: Emulator, tmp_path: Path) -> None:
    with assembled(inprocess.url, tmp_path) as parts:
        vfs = parts.vfs
        vfs.make_dir("/vault", 0o755)
        handle = vfs.create("/vault/half", 0o644, opener=100)
        vfs.write(handle, 0, bytes(2 * MiB + 5), process=100)
        vfs.close()  # what FUSE's destroy does
        assert vfs.catalog.get("vault", "half") is None
    assert archives(inprocess.url, "vault") == []
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="vault")["UploadsList"] == []
