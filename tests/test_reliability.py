"""When things go wrong: a crash mid-upload, an endpoint that goes away,
secrets and permissions. Each checked on a real mount, with plain boto3."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import Mount, ServedEmulator, fusermount, is_mounted, read_errno, read_or_none, wait_for
from glacierfs.treehash import tree_hash

from .conftest import MiB, archives, boto_client, environment, small_tmpfs

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--part-size", str(MiB), "--cleanup-interval", "0.5")


def test_kill_9_during_a_multipart_upload(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    (mount.path("v")).mkdir()
    (mount.path("v", "stored.bin")).write_bytes(b"s" * 1000)
    inprocess.settings.job_delay = 60
    with pytest.raises(OSError) as excinfo:
        open(mount.path("v", "stored.bin"), "rb").close()
    assert excinfo.value.errno == errno.EAGAIN
    handle = open(mount.path("v", "half.bin"), "wb")  # noqa: SIM115 - kept open across the kill
    handle.write(bytes(3 * MiB + 5))
    handle.flush()
    wait_for(
        lambda: boto_client(inprocess.url).list_multipart_uploads(vaultName="v")["UploadsList"],
        what="the multipart upload to start",
    )
    os.kill(mount.pid, signal.SIGKILL)
    mount.process.wait()
    with contextlib.suppress(OSError):  # the mount it wrote to is gone
        handle.close()
    subprocess.run([fusermount(), "-uz", str(mount.mountpoint)], check=False)
    assert not is_mounted(mount.mountpoint)
    catalog = next(mount.state.glob("catalog-*.sqlite"))
    assert sqlite3.connect(catalog).execute("PRAGMA integrity_check").fetchone() == ("ok",)

    again = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert sorted(os.listdir(again.path("v"))) == ["stored.bin"]  # half.bin was never stored
        wait_for(
            lambda: not boto_client(inprocess.url).list_multipart_uploads(vaultName="v")["UploadsList"],
            what="the orphaned upload to be aborted",
        )
        with pytest.raises(OSError) as excinfo:
            open(again.path("v", "stored.bin"), "rb").close()
        assert excinfo.value.errno == errno.EAGAIN
        assert inprocess.calls["InitiateJob"] == 1  # the job from before the crash, reused
        assert "was being uploaded when glacierfs stopped" in again.log_text()
    finally:
        again.unmount()
    assert sqlite3.connect(catalog).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_endpoint_gone_during_reads_and_listing(tmp_path: Path) -> None:
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    mount = Mount(tmp_path, server.url, *FAST, "--max-attempts", "3")
    try:
        mount.path("v").mkdir()
        mount.path("v", "f").write_bytes(b"content")
        server.stop()
        start = time.monotonic()
        for action in (
            lambda: open(mount.path("v", "f"), "rb"),  # noqa: SIM115 - the open is what is refused
            lambda: mount.path("v", "f").write_bytes(b"x"),
            lambda: os.listdir(mount.path("no-such-vault")),
        ):
            with pytest.raises(OSError) as excinfo:
                action()
            assert excinfo.value.errno in (errno.EIO, errno.ENOENT)
        assert time.monotonic() - start < 60  # a clear answer, never a hang
        assert "unreachable" in mount.log_text()
        assert os.listdir(mount.path("v")) == ["f"]  # the catalog still serves listings
    finally:
        mount.unmount()
        server.stop()


def test_secrets_never_reach_the_log_and_files_are_private(tmp_path: Path, inprocess: Emulator) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAGLACIERFSSECRETID",
        "AWS_SECRET_ACCESS_KEY": "glacierfs-test-secret-key-never-logged",
        "AWS_SESSION_TOKEN": "glacierfs-test-session-token-never-logged",
    }
    with environment(**secrets):
        mount = Mount(tmp_path, inprocess.url, *FAST, "--debug", "--cache-dir", str(tmp_path / "cache"))
    try:
        mount.path("v").mkdir()
        mount.path("v", "f").write_bytes(b"x" * (2 * MiB + 1))
        wait_for(lambda: read_or_none(mount.path("v", "f")), what="the retrieval")
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        options = next(line for line in mountinfo if f" {mount.mountpoint} " in line)
        assert "allow_other" not in options  # private to its user
    finally:
        mount.unmount()
    log = mount.log_text()
    assert "DEBUG" in log
    for value in secrets.values():
        assert value not in log
    assert "Signature=" not in log and "Credential=" not in log
    for root in (mount.state, tmp_path / "cache"):
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        for path in root.rglob("*"):
            private = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) & ~private == 0, path


@pytest.fixture
def small_cache_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs for --cache-dir: a cache disk that fills up."""
    with small_tmpfs(tmp_path / "small-cache", "3m") as cache:
        yield cache


def test_full_cache_disk_gives_enospc_and_the_mount_keeps_serving(
    inprocess: Emulator, tmp_path: Path, small_cache_disk: Path
) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(small_cache_disk))
    try:
        mount.path("v").mkdir()
        big = bytes(range(256)) * (6 * MiB // 256)
        mount.path("v", "big").write_bytes(big)
        mount.path("v", "small").write_bytes(b"fits")

        def open_errno(name: str) -> int | None:
            try:
                return len(mount.path("v", name).read_bytes()) and None
            except OSError as error:
                return error.errno

        assert open_errno("big") == errno.EAGAIN
        assert wait_for(lambda: open_errno("big") == errno.ENOSPC, what="ENOSPC")
        assert "the cache directory is full" in mount.log_text()
        # Everything else still works: listing, writing, reading what fits.
        mount.path("v", "new").write_bytes(b"still writable")
        assert sorted(os.listdir(mount.path("v"))) == ["big", "new", "small"]
        assert wait_for(lambda: read_or_none(mount.path("v", "small"))) == b"fits"
    finally:
        mount.unmount()


def test_cache_writes_on_a_full_cache_disk_still_store_the_upload(
    inprocess: Emulator, tmp_path: Path, small_cache_disk: Path
) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(small_cache_disk), "--cache-writes")
    try:
        mount.path("v").mkdir()
        data = bytes(range(256)) * (6 * MiB // 256)
        source = tmp_path / "six-mib"
        source.write_bytes(data)
        subprocess.run(["cp", str(source), str(mount.path("v", "f"))], check=True)
        assert "not keeping a copy of this upload in the cache" in mount.log_text()
        [stored] = archives(inprocess.url, "v")
        assert stored["Size"] == len(data) and stored["SHA256TreeHash"] == tree_hash(data)
        assert list((small_cache_disk / "incoming").iterdir()) == []
        assert os.getxattr(mount.path("v", "f"), "user.glacier.state") == b"stored"
    finally:
        mount.unmount()


def test_truncated_job_output_is_never_served(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="t")
    boto.upload_archive(vaultName="t", archiveDescription="listed-later.txt", body=b"later")
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        data = bytes(range(256)) * 8192  # 2 MiB
        mount.path("v", "f").write_bytes(data)
        inprocess.settings.truncate_outputs = 1000  # archive output and inventories alike
        with pytest.raises(OSError):
            mount.path("v", "f").read_bytes()  # starts the job
        code = wait_for(
            lambda: read_errno(mount.path("v", "f")) not in (errno.EAGAIN, None) and read_errno(mount.path("v", "f")),
            what="the verdict",
        )
        assert code == errno.EIO
        # Short inventory responses are followed by requests for the rest: the listing is whole.
        os.listdir(mount.path("t"))
        assert wait_for(lambda: os.listdir(mount.path("t")), what="the inventory") == ["listed-later.txt"]
        inprocess.settings.truncate_outputs = 0
        assert mount.process.poll() is None
    finally:
        mount.unmount()
