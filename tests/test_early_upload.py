"""--write-back and large files: the multipart upload starts from the spool
while the file is still written, so writing and sending overlap; it is
completed once the file is closed and claimed, and dropped (aborted, the file
then sent from the spool) whenever it may no longer match the file: bytes
already sent written again, a rename, an rm. And an InitiateMultipartUpload
whose answer a crash never let us record is found and aborted. What reached
Glacier is checked with plain boto3."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import Mount, wait_for
from glacierfs.treehash import tree_hash

from .conftest import WRITE_BACK, MiB
from .test_writeback import glacierfs_umount, open_uploads, rsync_through_write_back, stored

pytestmark = pytest.mark.mount


def test_a_large_file_goes_up_while_it_is_written(inprocess: Emulator, held: Mount) -> None:
    data = os.urandom(4 * MiB + 123)
    with open(held.path("v", "big.bin"), "wb") as handle:
        handle.write(data[: 3 * MiB])
        handle.flush()
        # Parts reach Glacier while the file is still open, though nothing is stored before umount.
        wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 2, what="parts sent while the file is written")
        handle.write(data[3 * MiB :])
    assert inprocess.calls["CompleteMultipartUpload"] == 0
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"big.bin": [tree_hash(data)]}
    # One upload, every part sent once, nothing aborted, nothing left open.
    assert inprocess.calls["InitiateMultipartUpload"] == 1 and inprocess.calls["UploadMultipartPart"] == 5
    assert inprocess.calls["AbortMultipartUpload"] == 0
    assert open_uploads(inprocess.url) == []


def test_bytes_written_again_after_they_were_sent_drop_the_early_upload(inprocess: Emulator, held: Mount) -> None:
    data = bytearray(os.urandom(3 * MiB + 5))
    with open(held.path("v", "rewritten.bin"), "wb") as handle:
        handle.write(data)
        handle.flush()
        wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 1, what="a part sent")
        handle.seek(0)
        handle.write(b"HEADER")  # as tar or a media muxer rewrites a header at the end
    data[:6] = b"HEADER"
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"rewritten.bin": [tree_hash(bytes(data))]}
    assert inprocess.calls["AbortMultipartUpload"] >= 1
    assert open_uploads(inprocess.url) == []
    assert "bytes already sent were written again" in held.log_text()


def test_a_rename_after_close_drops_the_early_upload_and_the_new_name_is_recorded(
    inprocess: Emulator, held: Mount
) -> None:
    data = os.urandom(3 * MiB + 7)
    held.path("v", "draft.bin").write_bytes(data)
    wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 3, what="the parts sent")
    held.path("v", "draft.bin").rename(held.path("v", "final.bin"))
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {"final.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []


def test_rsync_of_a_large_file_completes_the_early_upload_under_the_real_name(
    inprocess: Emulator, tmp_path: Path
) -> None:
    """rsync writes into .NAME.XXXXXX and renames it at the end: the early
    upload is described under NAME, so the rename does not cost a second upload."""
    source = tmp_path / "source"
    source.mkdir()
    data = os.urandom(3 * MiB + 11)
    (source / "video.mp4").write_bytes(data)
    rsync_through_write_back(inprocess, tmp_path, source)
    assert stored(inprocess.url) == {"video.mp4": [tree_hash(data)]}
    assert inprocess.calls["InitiateMultipartUpload"] == 1 and inprocess.calls["AbortMultipartUpload"] == 0


def test_rm_of_a_queued_large_file_aborts_its_early_upload(inprocess: Emulator, held: Mount) -> None:
    held.path("v", "scratch.bin").write_bytes(os.urandom(3 * MiB))
    wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 3, what="the parts sent")
    held.path("v", "scratch.bin").unlink()
    assert glacierfs_umount(held).returncode == 0
    assert stored(inprocess.url) == {}
    assert inprocess.calls["CompleteMultipartUpload"] == 0 and inprocess.calls["UploadArchive"] <= 1  # the manifest
    assert open_uploads(inprocess.url) == []


@pytest.mark.parametrize("mode", [(), WRITE_BACK], ids=["direct", "write-back"])
def test_a_crash_before_the_initiation_is_answered_leaves_no_upload_open(
    inprocess: Emulator, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """kill -9 while InitiateMultipartUpload is on its way: Glacier opens the
    upload, but its id never reached the catalog. The next mount finds it by
    the name and time recorded before the request, and aborts it."""
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * MiB))
    mount = Mount(tmp_path, inprocess.url, "--part-size", str(MiB), "--cleanup-interval", "0.3", *mode)
    try:
        mount.path("v").mkdir()
        inprocess.settings.latency_ms = 1500
        writer = subprocess.Popen(
            ["dd", f"if={source}", f"of={mount.path('v', 'cut.bin')}", "bs=1M"], stderr=subprocess.DEVNULL
        )
        # Counted once the service acts, half the round trip before its answer arrives.
        wait_for(lambda: inprocess.calls["InitiateMultipartUpload"] >= 1, what="the initiation sent")
        mount.process.kill()
        mount.process.wait()
        writer.wait(timeout=30)
    finally:
        mount.unmount()
    inprocess.settings.latency_ms = 0
    assert open_uploads(inprocess.url)  # Glacier opened it; its id reached nobody
    again = Mount(tmp_path, inprocess.url, "--part-size", str(MiB), "--cleanup-interval", "0.3", *mode)
    try:
        wait_for(lambda: not open_uploads(inprocess.url), what="the janitor to abort it")
    finally:
        again.unmount()
    assert stored(inprocess.url) == {}
