"""Adversarial checks of --write-back's early upload (earlyupload.py): real
mounts, real tools, and what reached the emulator checked with plain boto3.
Each test names the behaviour it expects. The first two and the refused abort
reproduced problems an adversarial session found in the first version."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, run, wait_for
from glacierfs.treehash import tree_hash

from .conftest import HOLD, WRITE_BACK, MiB, small_tmpfs
from .test_writeback import glacierfs_umount, open_uploads, stored

pytestmark = pytest.mark.mount


def drained(mount: Mount) -> None:
    result = glacierfs_umount(mount)
    assert result.returncode == 0, result.stderr + mount.log_text()


def test_overwriting_a_queued_large_file_gives_up_its_early_upload(inprocess: Emulator, held: Mount) -> None:
    """cp big f; cp big2 f within the settle time: the first file's early
    upload is aborted at once (not at umount), and frees the slot, so the
    next large file streams while it is written."""
    first, second, third = (os.urandom(3 * MiB + n) for n in (1, 2, 3))
    held.path("v", "f.bin").write_bytes(first)
    wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 3, what="the first file's parts")
    held.path("v", "f.bin").write_bytes(second)  # O_TRUNC over the queued file
    # The first file's upload is no longer anyone's: aborted now, not at umount.
    wait_for(lambda: not open_uploads(inprocess.url), what="the displaced early upload to be aborted")
    initiated = inprocess.calls["InitiateMultipartUpload"]
    with open(held.path("v", "g.bin"), "wb") as handle:
        handle.write(third[: 2 * MiB])
        handle.flush()
        wait_for(lambda: inprocess.calls["InitiateMultipartUpload"] > initiated, what="g.bin to stream early")
        handle.write(third[2 * MiB :])
    drained(held)
    assert stored(inprocess.url) == {"f.bin": [tree_hash(second)], "g.bin": [tree_hash(third)]}
    assert open_uploads(inprocess.url) == []


def test_rm_while_the_early_upload_is_being_finished_sends_nothing_more(inprocess: Emulator, tmp_path: Path) -> None:
    """A slow service: the file is closed and claimed (settle 0) while its
    early upload still trails. rm gives the early upload up, and the queue
    sends nothing more: no upload from the spool of a file that is gone."""
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0", "--concurrency", "2")
    try:
        mount.path("v").mkdir()
        inprocess.settings.latency_ms = 800
        mount.path("v", "doomed.bin").write_bytes(os.urandom(6 * MiB))
        wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 1, what="a part sent")
        started = time.monotonic()
        os.remove(mount.path("v", "doomed.bin"))
        took = time.monotonic() - started
        time.sleep(3)  # what the queue does next, with nothing left to send
        resent = inprocess.calls["InitiateMultipartUpload"]
        inprocess.settings.latency_ms = 0
        time.sleep(1)
        drained(mount)
    finally:
        inprocess.settings.latency_ms = 0
        mount.unmount()
    parts = inprocess.calls["UploadMultipartPart"]
    assert stored(inprocess.url) == {}
    assert open_uploads(inprocess.url) == []
    assert (inprocess.calls["CompleteMultipartUpload"], inprocess.calls["DeleteArchive"]) == (0, 0), (
        f"a removed file was uploaded again and deleted ({resent} initiations, {parts} parts); rm took {took:.1f} s"
    )


def _parts_sent(emulator: Emulator, count: int) -> None:
    wait_for(lambda: emulator.calls["UploadMultipartPart"] >= count, what=f"{count} part(s) sent")


def _pwrite_behind(emulator: Emulator, fd: int) -> bytes:
    data = bytearray(os.urandom(4 * MiB + 9))
    os.pwrite(fd, data[: 3 * MiB], 0)
    _parts_sent(emulator, 1)
    os.pwrite(fd, b"BEHIND", 100)  # into part 0, already sent or in flight
    data[100:106] = b"BEHIND"
    os.pwrite(fd, data[3 * MiB :], 3 * MiB)
    return bytes(data)


def _preallocated(emulator: Emulator, fd: int) -> bytes:
    data = os.urandom(5 * MiB + 3)
    os.ftruncate(fd, len(data))  # as a preallocating downloader does
    for offset in range(0, len(data), MiB):
        os.pwrite(fd, data[offset : offset + MiB], offset)
        if offset == MiB:
            _parts_sent(emulator, 1)
    return data


def _sparse(emulator: Emulator, fd: int) -> bytes:
    data = bytearray(4 * MiB + 1)
    os.pwrite(fd, b"A" * MiB, 0)
    data[:MiB] = b"A" * MiB
    os.pwrite(fd, b"C" * MiB, 2 * MiB)
    data[2 * MiB : 3 * MiB] = b"C" * MiB
    os.pwrite(fd, b"B" * (MiB // 2), MiB)
    data[MiB : MiB + MiB // 2] = b"B" * (MiB // 2)
    os.pwrite(fd, b"E", 4 * MiB)
    data[4 * MiB] = ord("E")
    return bytes(data)


def _truncate_below_sent(emulator: Emulator, fd: int) -> bytes:
    data = os.urandom(4 * MiB)
    os.pwrite(fd, data, 0)
    _parts_sent(emulator, 2)
    os.ftruncate(fd, MiB + MiB // 2)
    tail = os.urandom(2 * MiB)
    os.pwrite(fd, tail, MiB + MiB // 2)
    return data[: MiB + MiB // 2] + tail


def _truncate_then_grow(emulator: Emulator, fd: int) -> bytes:
    data = os.urandom(3 * MiB)
    os.pwrite(fd, data, 0)
    _parts_sent(emulator, 2)
    os.ftruncate(fd, 2 * MiB + 5)  # above what was claimed, or below: either way right
    os.ftruncate(fd, 3 * MiB + 7)  # zeros
    return data[: 2 * MiB + 5] + bytes(MiB + 2)


def _fallocate(emulator: Emulator, fd: int) -> bytes:
    data = os.urandom(2 * MiB + 1)
    os.pwrite(fd, data, 0)
    _parts_sent(emulator, 1)
    try:
        os.posix_fallocate(fd, 0, 4 * MiB)
    except OSError:
        return data
    return data + bytes(4 * MiB - len(data))


def _append_after_gap_closes(emulator: Emulator, fd: int) -> bytes:
    """A hole first, then the bytes before it: contiguity is tracked right."""
    data = os.urandom(3 * MiB + 11)
    os.pwrite(fd, data[2 * MiB :], 2 * MiB)
    os.pwrite(fd, data[: 2 * MiB], 0)
    return data


WRITERS = {
    "pwrite-behind": _pwrite_behind,
    "preallocated": _preallocated,
    "sparse": _sparse,
    "truncate-below-sent": _truncate_below_sent,
    "truncate-then-grow": _truncate_then_grow,
    "fallocate": _fallocate,
    "gap-then-fill": _append_after_gap_closes,
}


@pytest.mark.parametrize("name", WRITERS)
def test_odd_writers_store_their_final_bytes(inprocess: Emulator, held: Mount, name: str) -> None:
    fd = os.open(held.path("v", "x.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        expected = WRITERS[name](inprocess, fd)
    finally:
        os.close(fd)
    drained(held)
    assert stored(inprocess.url) == {"x.bin": [tree_hash(expected)]}
    assert open_uploads(inprocess.url) == []


@pytest.mark.parametrize(
    "moves",
    [
        [("a.bin", "b.bin")],  # before the first part: described as b
        [("a.bin", "b.bin")],  # after it (see below)
        [("a.bin", "d/a.bin")],  # into another directory
        [("a.bin", "b.bin"), ("b.bin", "a.bin")],  # away and back
        [("d", "e")],  # the directory holding it
    ],
    ids=["before-first-part", "after-first-part", "into-dir", "away-and-back", "parent-dir"],
)
def test_renames_of_the_open_file_name_the_archive(
    inprocess: Emulator, held: Mount, moves: list[tuple[str, str]], request: pytest.FixtureRequest
) -> None:
    case = request.node.callspec.id
    held.path("v", "d").mkdir()
    start = "d/a.bin" if case == "parent-dir" else "a.bin"
    data = os.urandom(4 * MiB + 17)
    with open(held.path("v", start), "wb") as handle:
        if case == "before-first-part":
            handle.write(data[: MiB // 2])
            handle.flush()
        else:
            handle.write(data[: 2 * MiB])
            handle.flush()
            _parts_sent(inprocess, 1)
        for old, new in moves:
            os.rename(held.path("v", old), held.path("v", new))
        handle.write(data[handle.tell() :])
    final = {"before-first-part": "b.bin", "after-first-part": "b.bin", "into-dir": "d/a.bin"}.get(case, "a.bin")
    if case == "parent-dir":
        final = "e/a.bin"
    drained(held)
    assert stored(inprocess.url) == {final: [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []
    if case in ("before-first-part", "away-and-back"):
        assert inprocess.calls["InitiateMultipartUpload"] == 1 and inprocess.calls["AbortMultipartUpload"] == 0


def test_kill_9_of_the_daemon_mid_stream_then_remount(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    try:
        mount.path("v").mkdir()
        handle = open(mount.path("v", "cut.bin"), "wb")  # noqa: SIM115 - closed after the daemon dies
        handle.write(os.urandom(3 * MiB))
        handle.flush()
        _parts_sent(inprocess, 2)
        mount.process.kill()
        mount.process.wait()
        with pytest.raises(OSError):
            handle.close()
    finally:
        mount.unmount()
    assert open_uploads(inprocess.url)
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    try:
        wait_for(lambda: not open_uploads(inprocess.url), what="the janitor to abort it")
        assert not again.path("v", "cut.bin").exists()
        drained(again)
    finally:
        again.unmount()
    assert stored(inprocess.url) == {}
    assert [p for p in (tmp_path / "state").glob("spool-*/*") if p.name != ".lock"] == []


def test_kill_of_the_writer_mid_stream_stores_nothing(inprocess: Emulator, held: Mount) -> None:
    child = subprocess.Popen(
        [
            "python3",
            "-c",
            "import os,sys,time; f=open(sys.argv[1],'wb'); f.write(os.urandom(3<<20)); f.flush(); time.sleep(60)",
            str(held.path("v", "half.bin")),
        ]
    )
    try:
        _parts_sent(inprocess, 2)
    finally:
        child.kill()
        child.wait()
    wait_for(lambda: not held.path("v", "half.bin").exists(), what="the aborted file to go")
    wait_for(lambda: not open_uploads(inprocess.url), what="the early upload to be aborted")
    # The early slot is free again: the next large file streams while written.
    initiated = inprocess.calls["InitiateMultipartUpload"]
    with open(held.path("v", "next.bin"), "wb") as handle:
        handle.write(os.urandom(2 * MiB))
        handle.flush()
        wait_for(lambda: inprocess.calls["InitiateMultipartUpload"] > initiated, what="next.bin's early upload")
    drained(held)
    assert list(stored(inprocess.url)) == ["next.bin"]
    assert open_uploads(inprocess.url) == []


@pytest.mark.parametrize("lazy", [False, True], ids=["drain", "lazy"])
def test_umount_while_a_large_file_is_open_and_streaming(inprocess: Emulator, held: Mount, lazy: bool) -> None:
    data = os.urandom(3 * MiB + 1)
    with open(held.path("v", "open.bin"), "wb") as handle:
        handle.write(data[: 2 * MiB])
        handle.flush()
        _parts_sent(inprocess, 1)
        result = run(*GLACIERFS, "umount", held.mountpoint, *(["--lazy"] if lazy else []), check=False)
        assert result.returncode != 0 and held.process.poll() is None, result.stderr
        handle.write(data[2 * MiB :])
    drained(held)
    assert stored(inprocess.url) == {"open.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []


def _outage(emulator: Emulator, operation: str, seconds: float) -> None:
    emulator.settings.fail_operation = operation
    emulator.settings.fail_status = 503
    emulator.settings.fail_until = time.time() + seconds


def test_an_outage_of_upload_part_while_streaming(inprocess: Emulator, held: Mount) -> None:
    data = os.urandom(5 * MiB + 3)
    with open(held.path("v", "o.bin"), "wb") as handle:
        handle.write(data[: 2 * MiB])
        handle.flush()
        _parts_sent(inprocess, 1)
        _outage(inprocess, "UploadMultipartPart", 4)
        handle.write(data[2 * MiB :])
    wait_for(lambda: time.time() > inprocess.settings.fail_until, what="the outage to end")
    drained(held)
    assert stored(inprocess.url) == {"o.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []


def test_an_outage_of_complete_keeps_the_file_for_the_next_mount(inprocess: Emulator, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 3)
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    try:
        mount.path("v").mkdir()
        mount.path("v", "c.bin").write_bytes(data)
        _parts_sent(inprocess, 3)
        _outage(inprocess, "CompleteMultipartUpload", 600)
        result = glacierfs_umount(mount)
        assert result.returncode == 1 and "c.bin is not stored" in result.stderr, result.stderr
    finally:
        inprocess.settings.fail_until = 0
        mount.unmount()
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    try:
        drained(again)
    finally:
        again.unmount()
    assert stored(inprocess.url) == {"c.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []


def test_an_outage_of_abort_during_a_drop_is_cleaned_up_within_the_mount(inprocess: Emulator, held: Mount) -> None:
    """The drop's abort fails: the upload is left to the janitor, which aborts
    it once the outage is over, while this mount lives."""
    data = bytearray(os.urandom(3 * MiB))
    with open(held.path("v", "a.bin"), "wb") as handle:
        handle.write(data)
        handle.flush()
        _parts_sent(inprocess, 2)
        _outage(inprocess, "AbortMultipartUpload", 3)
        handle.seek(0)
        handle.write(b"X")
    data[0:1] = b"X"
    wait_for(lambda: "could not abort multipart upload" in held.log_text(), what="the failed abort")
    # The outage ends after 3 s; the janitor runs every 0.3 s.
    wait_for(lambda: not open_uploads(inprocess.url), timeout=15, what="the janitor to abort it")
    drained(held)
    assert stored(inprocess.url) == {"a.bin": [tree_hash(bytes(data))]}
    assert open_uploads(inprocess.url) == []


def test_the_janitor_leaves_a_live_upload_of_a_crashed_initiations_name_alone(
    inprocess: Emulator, tmp_path: Path
) -> None:
    """A crash while the initiation was unanswered leaves a placeholder row for
    x.bin; the next mount resends x.bin at once. The janitor's first round
    takes its snapshot of known ids, then lists Glacier's open uploads: the
    resend's upload, recorded in between, is 'unknown' and aborted (owned ids
    are not consulted for placeholders)."""
    data = os.urandom(3 * MiB + 5)
    mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0")
    try:
        mount.path("v").mkdir()
        inprocess.settings.latency_ms = 1500
        mount.path("v", "x.bin").write_bytes(data)
        wait_for(lambda: inprocess.calls["InitiateMultipartUpload"] >= 1, what="the initiation acted on")
        mount.process.kill()
        mount.process.wait()
    finally:
        mount.unmount()
    inprocess.settings.latency_ms = 1000
    again = Mount(tmp_path, inprocess.url, *WRITE_BACK, "--settle", "0")
    try:
        wait_for(lambda: "stored v/x.bin" in again.log_text(), timeout=60, what="x.bin stored")
        inprocess.settings.latency_ms = 0
        drained(again)
    finally:
        inprocess.settings.latency_ms = 0
        again.unmount()
    assert stored(inprocess.url) == {"x.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []
    assert "failed (attempt 1" not in again.log_text(), again.log_text()


def test_a_full_spool_after_the_early_upload_started(inprocess: Emulator, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "spooldisk", "4m") as spool:
        mount = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD, "--spool-dir", str(spool))
        try:
            mount.path("v").mkdir()
            result = subprocess.run(
                ["dd", "if=/dev/urandom", f"of={mount.path('v', 'full.bin')}", "bs=256K", "count=40"],
                capture_output=True,
                text=True,
            )
            assert result.returncode != 0 and "No space left on device" in result.stderr, result.stderr
            assert inprocess.calls["InitiateMultipartUpload"] == 1  # it had started streaming
            wait_for(lambda: not open_uploads(inprocess.url), what="the early upload to be aborted")
            assert not mount.path("v", "full.bin").exists()
            data = os.urandom(2 * MiB + 1)
            mount.path("v", "fits.bin").write_bytes(data)
            wait_for(lambda: inprocess.calls["InitiateMultipartUpload"] == 2, what="fits.bin streamed early")
            drained(mount)
        finally:
            mount.unmount()
    assert stored(inprocess.url) == {"fits.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []
    assert "spool is full" in mount.log_text()


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_two_large_files_at_once_stay_within_the_memory_bound(inprocess: Emulator, tmp_path: Path) -> None:
    part, concurrency = 8 * MiB, 2
    mount = Mount(
        tmp_path,
        inprocess.url,
        "--write-back",
        "--part-size",
        str(part),
        "--concurrency",
        str(concurrency),
        "--settle",
        "0",
        "--cleanup-interval",
        "0.3",
    )
    sources = []
    for name in ("one", "two"):
        source = tmp_path / name
        with open(source, "wb") as handle:
            for _ in range(8):
                handle.write(os.urandom(8 * MiB))
            handle.write(os.urandom(12345))
        sources.append(source)
    try:
        mount.path("v").mkdir()
        baseline = _rss_kib(mount.pid, "VmRSS")
        peaks = [baseline]

        def sample() -> None:
            while mount.process.poll() is None:
                try:
                    peaks.append(_rss_kib(mount.pid, "VmHWM"))
                except (OSError, AssertionError):
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        inprocess.settings.latency_ms = 200
        writers = [
            subprocess.Popen(
                ["dd", f"if={source}", f"of={mount.path('v', source.name)}", "bs=1M"], stderr=subprocess.DEVNULL
            )
            for source in sources
        ]
        for writer in writers:
            assert writer.wait(timeout=120) == 0
        early = inprocess.calls["InitiateMultipartUpload"]
        inprocess.settings.latency_ms = 0
        drained(mount)
        sampler.join()
        peak = max(peaks)
    finally:
        inprocess.settings.latency_ms = 0
        mount.unmount()
    assert stored(inprocess.url) == {source.name: [tree_hash(source.read_bytes())] for source in sources}
    assert open_uploads(inprocess.url) == []
    print("initiations while written:", early, "baseline KiB:", baseline, "peak KiB:", peak)
    bound = part * (concurrency + 2) // 1024
    assert peak - baseline <= bound + 16 * 1024, (
        f"{(peak - baseline) // 1024} MiB above baseline, bound {bound // 1024} MiB"
    )


@pytest.mark.parametrize("tool", ["shell-shared", "dd-fsync", "rsync-inplace", "tar", "cp-over-queued"])
def test_tools(inprocess: Emulator, held: Mount, tmp_path: Path, tool: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    data = os.urandom(3 * MiB + 99)
    (source / "t.bin").write_bytes(data)
    target = held.path("v", "t.bin")
    if tool == "shell-shared":
        half = source / "half"
        half.write_bytes(data[: 2 * MiB])
        rest = source / "rest"
        rest.write_bytes(data[2 * MiB :])
        run("sh", "-c", f'{{ cat "{half}"; sleep 1; cat "{rest}"; }} > "{target}"')
    elif tool == "dd-fsync":
        run("dd", f"if={source / 't.bin'}", f"of={target}", "bs=1M", "conv=fsync")
        assert os.getxattr(target, "user.glacier.state").decode() == "stored"  # close waited for Glacier
    elif tool == "rsync-inplace":
        run("rsync", "--inplace", f"{source / 't.bin'}", str(target))
    elif tool == "tar":
        run("tar", "-C", str(source), "-cf", str(tmp_path / "a.tar"), "t.bin")
        run("tar", "-C", str(held.path("v")), "-xf", str(tmp_path / "a.tar"))
    elif tool == "cp-over-queued":
        target.write_bytes(os.urandom(3 * MiB))
        _parts_sent(inprocess, 3)
        run("cp", str(source / "t.bin"), str(target))
    drained(held)
    assert stored(inprocess.url) == {"t.bin": [tree_hash(data)]}
    assert open_uploads(inprocess.url) == []
