"""--write-back on a real mount: close() returns once the file is in the spool,
uploads follow, and fsync, `sync FILE` and `glacierfs umount` wait for them.
Nothing is lost to kill -9, rm/mv/overwrite of queued files do what they say,
a full spool refuses bytes, and names are right at the source. What reached
Glacier is checked with plain boto3."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from glacierfs import names
from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, run, wait_for
from glacierfs.treehash import tree_hash

from .conftest import HOLD, WRITE_BACK, MiB, archives, boto_client, small_tmpfs

pytestmark = pytest.mark.mount


def stored(url: str, vault: str = "v") -> dict[str, list[str]]:
    """Path -> tree hashes of the archives recording it (glacierfs's manifests aside), by plain boto3."""
    found: dict[str, list[str]] = {}
    for item in archives(url, vault):
        decoded = names.decode(item["ArchiveDescription"])
        if decoded is not None and not decoded.path.startswith(".glacierfs/"):
            found.setdefault(decoded.path, []).append(item["SHA256TreeHash"])
    return found


def open_uploads(url: str, vault: str = "v") -> list[dict]:
    """Multipart uploads Glacier holds open, by plain boto3."""
    return boto_client(url).list_multipart_uploads(vaultName=vault)["UploadsList"]


def kill_while_uploading(mount: Mount, path: Path) -> None:
    """kill -9 of the daemon once ``path``'s upload has been sent (the emulator
    is answering it, its latency set by the caller)."""
    wait_for(lambda: state(path) == "uploading", what="the upload to start")
    time.sleep(0.5)
    mount.process.kill()
    mount.process.wait()


def rsync_through_write_back(emulator: Emulator, tmp_path: Path, source: Path) -> None:
    """rsync -a of ``source``'s contents into vault v of a --write-back mount
    (settle 1 s), then `glacierfs umount`, which must drain."""
    mount = Mount(tmp_path, emulator.url, *WRITE_BACK, "--settle", "1")
    try:
        mount.path("v").mkdir()
        run("rsync", "-a", f"{source}/", mount.path("v"))
        assert glacierfs_umount(mount).returncode == 0
    finally:
        mount.unmount()


def described(archive_id: str, listed: list[dict]) -> str:
    return next(item["ArchiveDescription"] for item in listed if item["ArchiveId"] == archive_id)


def glacierfs_umount(mount: Mount, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run(*GLACIERFS, "umount", mount.mountpoint, *extra, check=False)
    mount.process.wait(timeout=30)
    return result


def spooled(mount: Mount) -> list[Path]:
    return [path for path in mount.state.glob("spool-*/*") if path.name != ".lock"]


def state(path: Path) -> str:
    return os.getxattr(path, "user.glacier.state").decode()


def make_tree(root: Path, count: int = 12) -> dict[str, bytes]:
    contents = {f"tree/f{index:02}.txt": os.urandom(10_000 + index) for index in range(count)}
    contents["tree/sub/big.bin"] = os.urandom(2 * MiB + 12_345)  # multipart at 1 MiB parts
    contents["tree/sub/empty"] = b""
    for relative, data in contents.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return contents


def test_cp_returns_at_once_and_umount_drains_the_queue(inprocess: Emulator, held: Mount, tmp_path: Path) -> None:
    source = tmp_path / "source"
    contents = make_tree(source)
    run("cp", "-r", source / "tree", held.path("v"))
    # Nothing is stored before fsync or umount; only the large file's upload started as it was written.
    assert inprocess.calls["UploadArchive"] == 0 and inprocess.calls["CompleteMultipartUpload"] == 0
    assert inprocess.calls["InitiateMultipartUpload"] <= 1
    assert state(held.path("v", "tree", "f01.txt")) == "queued"
    assert state(held.path("v", "tree", "sub", "empty")) == "empty"
    # Queued files read from the spool: the same bytes, no retrieval.
    for relative, data in contents.items():
        assert held.path("v", relative).read_bytes() == data
    assert inprocess.calls["InitiateJob"] == 0
    status = json.loads(run(*GLACIERFS, "status", "--json", held.mountpoint).stdout)
    queue = status["mounts"][str(held.mountpoint)]["queue"]
    assert queue["files"] == len(contents) - 1 and queue["bytes"] == sum(map(len, contents.values()))
    assert f"write-back queue: {len(contents) - 1} file(s)" in run(*GLACIERFS, "status", held.mountpoint).stdout

    result = glacierfs_umount(held)
    assert result.returncode == 0, result.stderr
    assert "waiting for uploads" in result.stderr
    assert stored(inprocess.url) == {
        relative: [tree_hash(data)] for relative, data in contents.items() if data and relative
    }


def test_kill_9_right_after_cp_loses_nothing(inprocess: Emulator, tmp_path: Path) -> None:
    """Some uploads are in flight when the daemon dies (a slow service, no settle
    time), the rest only queued: the next mount sends every one, and leaves no
    multipart upload open."""
    inprocess.settings.latency_ms = 300
    source = tmp_path / "source"
    contents = make_tree(source, count=30)
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0", "--transfers", "4")
    try:
        mount.path("v").mkdir()
        run("cp", "-r", source / "tree", mount.path("v"))
        wait_for(lambda: inprocess.calls["UploadArchive"] >= 2, what="uploads under way")
        mount.process.kill()
        mount.process.wait()
    finally:
        mount.unmount()
    assert len(stored(inprocess.url)) < len(contents) - 1  # the crash came before the end
    inprocess.settings.latency_ms = 0
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK)
    try:
        assert glacierfs_umount(again).returncode == 0
    finally:
        again.unmount()
    found = stored(inprocess.url)
    assert found.keys() == {relative for relative, data in contents.items() if data}
    for relative, hashes in found.items():
        assert set(hashes) == {tree_hash(contents[relative])}  # a replay may have stored a second copy
    assert open_uploads(inprocess.url) == []
    assert "was being uploaded when glacierfs stopped; it is sent again" in again.log_text()


def test_a_copy_stored_twice_by_a_replay_is_deleted_by_the_next_inventory(inprocess: Emulator, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    inprocess.settings.latency_ms = 1500  # the service stores it after the daemon is gone
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0")
    try:
        mount.path("v").mkdir()
        mount.path("v", "twice.bin").write_bytes(data)
        kill_while_uploading(mount, mount.path("v", "twice.bin"))
    finally:
        mount.unmount()
    wait_for(lambda: inprocess.calls["UploadArchive"] == 1, what="the emulator to store the first attempt")
    inprocess.settings.latency_ms = 0
    assert stored(inprocess.url) == {"twice.bin": [tree_hash(data)]}  # the first attempt was stored
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK)
    try:
        wait_for(lambda: state(again.path("v", "twice.bin")) == "stored", what="the replay")
        assert stored(inprocess.url) == {"twice.bin": [tree_hash(data)] * 2}  # at most one copy extra
        kept = os.getxattr(again.path("v", "twice.bin"), "user.glacier.archive-id").decode()
        run(*GLACIERFS, "refresh", again.path("v"))
        wait_for(lambda: len(stored(inprocess.url)["twice.bin"]) == 1, what="the copy to be deleted")
        listed = archives(inprocess.url, "v")
        assert [item["ArchiveId"] for item in listed if item["ArchiveDescription"] == described(kept, listed)] == [kept]
        assert state(again.path("v", "twice.bin")) == "stored"
        assert os.listdir(again.path("v")) == ["twice.bin"]
    finally:
        again.unmount()
    assert "deleted the second copy" in again.log_text()


def test_sync_file_fails_when_glacier_refuses_and_the_file_stays_queued(inprocess: Emulator, held: Mount) -> None:
    held.path("gone").mkdir()
    held.path("gone", "file.txt").write_bytes(b"kept in the spool")
    boto_client(inprocess.url).delete_vault(vaultName="gone")  # empty in Glacier: nothing was sent yet
    result = run("sync", held.path("gone", "file.txt"), check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert state(held.path("gone", "file.txt")).startswith("failed: ")
    status = run(*GLACIERFS, "status", held.mountpoint, check=False)
    assert status.returncode == 3 and "FAILED 1 time(s)" in status.stdout
    assert held.path("gone", "file.txt").read_bytes() == b"kept in the spool"
    # The other vault's files are not held up by it.
    held.path("v", "fine.txt").write_bytes(b"fine")
    assert run("sync", held.path("v", "fine.txt")).returncode == 0
    assert state(held.path("v", "fine.txt")) == "stored"
    result = glacierfs_umount(held)
    assert result.returncode == 1 and "gone/file.txt is not stored" in result.stderr
    assert [path.read_bytes() for path in spooled(held)] == [b"kept in the spool"]
    assert "upload of gone/file.txt failed" in held.log_text()


def test_rm_mv_and_overwrite_of_queued_files(inprocess: Emulator, held: Mount) -> None:
    vault = held.path("v")
    (vault / "old.txt").write_bytes(b"first version")
    run("sync", vault / "old.txt")  # stored before it is overwritten
    first_archive = os.getxattr(vault / "old.txt", "user.glacier.archive-id").decode()
    for name in ("removed.txt", "moved.txt", "twice.txt"):
        (vault / name).write_bytes(name.encode())
    (vault / "old.txt").write_bytes(b"second version")  # replaces a stored file: queued
    (vault / "twice.txt").write_bytes(b"twice, second")  # replaces a queued file in the queue
    os.remove(vault / "removed.txt")
    os.rename(vault / "moved.txt", vault / "renamed.txt")
    assert sorted(os.listdir(vault)) == ["old.txt", "renamed.txt", "twice.txt"]
    assert (vault / "twice.txt").read_bytes() == b"twice, second"
    assert len(spooled(held)) == 3  # the replaced and removed ones are gone
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {
        "old.txt": [tree_hash(b"second version")],
        "renamed.txt": [tree_hash(b"moved.txt")],
        "twice.txt": [tree_hash(b"twice, second")],
    }
    assert first_archive not in {item["ArchiveId"] for item in archives(inprocess.url, "v")}


def test_a_full_spool_refuses_what_it_cannot_keep(inprocess: Emulator, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as spool_root:
        mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD, "--spool-dir", str(spool_root))
        try:
            mount.path("v").mkdir()
            source = tmp_path / "big.bin"
            source.write_bytes(os.urandom(3 * MiB))
            result = run("cp", source, mount.path("v", "big.bin"), check=False)
            assert result.returncode != 0 and "No space left on device" in result.stderr
            assert not mount.path("v", "big.bin").exists()
            mount.path("v", "small.txt").write_bytes(b"fits")  # the mount goes on
            assert glacierfs_umount(mount).returncode == 0
        finally:
            mount.unmount()
    assert stored(inprocess.url) == {"small.txt": [tree_hash(b"fits")]}
    assert "the spool is full" in mount.log_text()


def test_spool_is_private(held: Mount) -> None:
    held.path("v", "secret.txt").write_bytes(b"secret")
    (spool,) = held.state.glob("spool-*")
    assert spool.stat().st_mode & 0o777 == 0o700
    assert {path.stat().st_mode & 0o777 for path in spool.iterdir()} == {0o600}  # the file and the lock


def test_rsync_records_real_names_dotfiles_included(inprocess: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "source"
    contents = {
        ".env.sample": b"A=1",
        ".env.docker": b"B=2",
        ".bashrc.backup": b"alias x=y",
        "notes.txt": b"notes",
        "photos/.hidden.Ab12Cd": b"a real name that looks temporary",
    }
    for relative, data in contents.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)
    rsync_through_write_back(inprocess, tmp_path, source)
    assert stored(inprocess.url) == {relative: [tree_hash(data)] for relative, data in contents.items()}


def test_the_settle_time_lets_a_rename_after_close_name_the_archive(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "1.5")
    try:
        mount.path("v").mkdir()
        mount.path("v", ".report.pdf.Xy12Zw").write_bytes(b"pdf")
        time.sleep(0.5)
        os.rename(mount.path("v", ".report.pdf.Xy12Zw"), mount.path("v", "report.pdf"))
        wait_for(lambda: state(mount.path("v", "report.pdf")) == "stored", what="the upload")
    finally:
        mount.unmount()
    assert stored(inprocess.url) == {"report.pdf": [tree_hash(b"pdf")]}


def test_without_write_back_real_dotfiles_keep_their_names(inprocess: Emulator, tmp_path: Path) -> None:
    """Only files rsync creates are taken for its temporary names."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "photo.jpg").write_bytes(b"jpeg")
    (source / ".env.docker").write_bytes(b"B=2")
    mount = Mount(tmp_path, inprocess.url, "--poll-interval", "0.2")
    try:
        mount.path("v").mkdir()
        for name in (".env.sample", ".bashrc.backup", ".bashrc.240115", ".env.prod01"):
            mount.path("v", name).write_bytes(name.encode())
        run("cp", source / ".env.docker", mount.path("v", ".env.Docker"))
        run("rsync", "-a", f"{source}/", mount.path("v", "synced"))
    finally:
        mount.unmount()
    assert stored(inprocess.url).keys() == {
        *(".env.sample", ".bashrc.backup", ".bashrc.240115", ".env.prod01", ".env.Docker"),
        "synced/photo.jpg",
        "synced/env.docker",  # rsync names a dotfile's temporary file without its dot: see the README
    }


def test_a_file_fsynced_while_written_is_stored_by_its_last_close(inprocess: Emulator, held: Mount) -> None:
    """dd conv=fsync, rsync --fsync, editors: fsync keeps the bytes in the spool
    (the file is not whole yet), and the close then waits for Glacier's verdict."""
    with open(held.path("v", "log.txt"), "wb") as file:
        file.write(b"line\n")
        file.flush()
        os.fsync(file.fileno())
        assert state(held.path("v", "log.txt")) == "uploading"  # still open: not a whole file yet
    assert state(held.path("v", "log.txt")) == "stored"
    assert stored(inprocess.url) == {"log.txt": [tree_hash(b"line\n")]}
    held.path("gone").mkdir()
    boto_client(inprocess.url).delete_vault(vaultName="gone")
    result = run(
        "dd", "if=/dev/zero", f"of={held.path('gone', 'refused.bin')}", "bs=1k", "count=4", "conv=fsync", check=False
    )
    assert result.returncode != 0 and "Input/output error" in result.stderr
    with pytest.raises(OSError) as refused:
        os.setxattr(held.path(), "user.glacier.queue", b"later")
    assert refused.value.errno == errno.EINVAL


def test_umount_lazy_leaves_the_queue_for_the_next_mount(inprocess: Emulator, held: Mount, tmp_path: Path) -> None:
    held.path("v", "later.txt").write_bytes(b"later")
    result = glacierfs_umount(held, "--lazy")
    assert result.returncode == 0 and "waiting for uploads" not in result.stderr
    assert stored(inprocess.url) == {}
    assert "unmounted with 1 file(s) (5 bytes) not yet uploaded" in held.log_text()
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK)
    try:
        assert state(again.path("v", "later.txt")) in ("queued", "uploading", "stored")
        assert glacierfs_umount(again).returncode == 0
    finally:
        again.unmount()
    assert stored(inprocess.url) == {"later.txt": [tree_hash(b"later")]}


def test_reading_a_queued_file_after_it_is_overwritten_shows_the_new_bytes(held: Mount) -> None:
    path = held.path("v", "same-size.txt")
    path.write_bytes(b"first!")
    assert path.read_bytes() == b"first!"
    path.write_bytes(b"second")
    assert path.read_bytes() == b"second"
    run("sync", path)
    assert state(path) == "stored"


def test_sync_of_a_stored_file_starts_no_retrieval(inprocess: Emulator, held: Mount) -> None:
    held.path("v", "kept.txt").write_bytes(b"kept")
    run("sync", held.path("v", "kept.txt"))
    assert state(held.path("v", "kept.txt")) == "stored"
    assert run("sync", held.path("v", "kept.txt")).returncode == 0  # stored, not cached: nothing to retrieve
    assert inprocess.calls["InitiateJob"] == 0


def test_a_second_mount_cannot_share_a_spool(inprocess: Emulator, held: Mount, tmp_path: Path) -> None:
    (spool,) = held.state.glob("spool-*")
    held.path("v", "precious").write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="is in use by another glacierfs mount"):
        Mount(tmp_path / "second", inprocess.url, *WRITE_BACK, "--spool-dir", str(spool.parent))
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"precious": [tree_hash(b"precious")]}


def test_an_editor_save_over_a_stored_file_keeps_the_old_archive_until_the_new_one_is_stored(
    inprocess: Emulator, held: Mount
) -> None:
    path = held.path("v", "notes.txt")
    path.write_bytes(b"old notes")
    run("sync", path)
    old = os.getxattr(path, "user.glacier.archive-id").decode()
    held.path("v", ".notes.txt.swp").write_bytes(b"new notes")
    os.rename(held.path("v", ".notes.txt.swp"), path)
    assert state(path) == "queued"
    assert old in {item["ArchiveId"] for item in archives(inprocess.url, "v")}
    run(*GLACIERFS, "refresh", held.path("v"))  # an inventory now lists the old archive: it stays hidden
    wait_for(lambda: not os.getxattr(held.path("v"), "user.glacier.inventory").startswith(b"pending"))
    assert os.listdir(held.path("v")) == ["notes.txt"]
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"notes.txt": [tree_hash(b"new notes")]}


def test_a_file_removed_during_its_replay_leaves_no_copy(inprocess: Emulator, tmp_path: Path) -> None:
    """The mount dies during an upload that Glacier still stores; after the
    remount the file is removed (or renamed) before its replay: the next
    inventory deletes what the first attempt stored."""
    inprocess.settings.latency_ms = 1500
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0")
    try:
        mount.path("v").mkdir()
        mount.path("v", "removed.bin").write_bytes(b"removed")
        mount.path("v", "moved.bin").write_bytes(b"moved")
        kill_while_uploading(mount, mount.path("v", "moved.bin"))
    finally:
        mount.unmount()
    wait_for(lambda: inprocess.calls["UploadArchive"] == 2, what="the emulator to store both")
    inprocess.settings.latency_ms = 0
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    try:
        os.remove(again.path("v", "removed.bin"))
        os.rename(again.path("v", "moved.bin"), again.path("v", "renamed.bin"))
        assert glacierfs_umount(again).returncode == 0
    finally:
        again.unmount()
    third = Mount(tmp_path, inprocess.url, *WRITE_BACK)
    try:
        run(*GLACIERFS, "refresh", third.path("v"))
        wait_for(lambda: stored(inprocess.url).keys() == {"renamed.bin"}, what="the copies to be deleted")
        assert sorted(os.listdir(third.path("v"))) == ["renamed.bin"]
    finally:
        third.unmount()
    assert stored(inprocess.url) == {"renamed.bin": [tree_hash(b"moved")]}


def test_a_rename_after_a_failed_attempt_names_the_archive(inprocess: Emulator, held: Mount) -> None:
    held.path("w").mkdir()
    held.path("w", "first.txt").write_bytes(b"data")
    boto = boto_client(inprocess.url)
    boto.delete_vault(vaultName="w")
    assert run("sync", held.path("w", "first.txt"), check=False).returncode != 0
    os.rename(held.path("w", "first.txt"), held.path("w", "second.txt"))
    boto.create_vault(vaultName="w")
    assert run("sync", held.path("w", "second.txt")).returncode == 0
    assert stored(inprocess.url, "w") == {"second.txt": [tree_hash(b"data")]}


def test_cache_writes_with_write_back_reads_back_without_a_retrieval(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD, "--cache-writes")
    try:
        mount.path("v").mkdir()
        mount.path("v", "mine.txt").write_bytes(b"mine")
        run("sync", mount.path("v", "mine.txt"))
        wait_for(lambda: state(mount.path("v", "mine.txt")) == "cached", what="the copy in the cache")
        assert mount.path("v", "mine.txt").read_bytes() == b"mine"
        assert inprocess.calls["InitiateJob"] == 0
    finally:
        mount.unmount()


def test_rsync_delay_updates_records_the_final_names(inprocess: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for index in range(3):
        (source / f"photo{index}.jpg").write_bytes(os.urandom(20_000))
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "1")
    try:
        mount.path("v").mkdir()
        # ~3 s: each file sits in .~tmp~ longer than the settle time until rsync's last renames
        run("rsync", "-a", "--delay-updates", "--bwlimit=20", f"{source}/", mount.path("v"))
        assert glacierfs_umount(mount).returncode == 0
    finally:
        mount.unmount()
    assert stored(inprocess.url).keys() == {"photo0.jpg", "photo1.jpg", "photo2.jpg"}


def test_a_file_past_ten_thousand_parts_is_refused_at_write(inprocess: Emulator, held: Mount) -> None:
    """As without --write-back: EFBIG at the write, not a file that fails in the queue for ever."""
    largest = 10_000 * MiB  # --part-size 1 MiB
    fd = os.open(held.path("v", "huge.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"kept")
        with pytest.raises(OSError) as written:
            os.pwrite(fd, b"x", largest)
        assert written.value.errno == errno.EFBIG
        with pytest.raises(OSError) as truncated:
            os.ftruncate(fd, largest + 1)
        assert truncated.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"huge.bin": [tree_hash(b"kept")]}
    assert "10,000 parts" in held.log_text()
