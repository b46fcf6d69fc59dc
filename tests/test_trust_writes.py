"""Trust, the writing side: signals, shells that share descriptors, rename over a
file still being written, rm of a file being written, a full state disk, names
that are not UTF-8. Each on a real mount, checked with plain boto3."""

from __future__ import annotations

import base64
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import Mount, ServedEmulator, read_when_ready, run, wait_for
from glacierfs.treehash import tree_hash

from .conftest import MiB, archives, boto_client, small_tmpfs

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--cleanup-interval", "0.3")
MANIFEST_PATH = base64.b64encode(b".glacierfs/manifest-")[:24].decode()  # how FastGlacier v4 spells it


@pytest.fixture
def mount(inprocess: Emulator, tmp_path: Path) -> Iterator[Mount]:
    mounted = Mount(tmp_path, inprocess.url, *FAST, "--part-size", str(MiB))
    mounted.path("v").mkdir()
    yield mounted
    mounted.unmount()


def stored_by_size(url: str, vault: str = "v") -> dict[int, str]:
    """Size -> tree hash of every archive in the vault but glacierfs's own
    manifests, by plain boto3."""
    return {
        item["Size"]: item["SHA256TreeHash"]
        for item in archives(url, vault)
        if MANIFEST_PATH not in item["ArchiveDescription"]
    }


# 1. Signals that shut the daemon down abort uploads still open -----------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("cut, part", [(800_000, 64 * MiB), (2_200_000, MiB)], ids=["single", "multipart"])
def test_a_shutdown_signal_never_stores_a_half_written_file(
    inprocess: Emulator, tmp_path: Path, signum: int, cut: int, part: int
) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--part-size", str(part))
    try:
        mount.path("v").mkdir()
        mount.path("v", "kept.txt").write_bytes(b"already stored")
        writer = open(mount.path("v", "half.bin"), "wb", buffering=0)  # noqa: SIM115 - open across the signal
        writer.write(bytes(cut))
        if part == MiB:
            wait_for(lambda: inprocess.calls["UploadMultipartPart"] >= 2, what="two parts to be sent")
        os.kill(mount.pid, signum)
        assert mount.process.wait(timeout=30) is not None
        with pytest.raises(OSError):  # the writer hears that its file is gone
            writer.write(bytes(3_000_000 - cut))
            writer.close()
    finally:
        mount.unmount()
    assert stored_by_size(inprocess.url) == {14: tree_hash(b"already stored")}
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="v")["UploadsList"] == []
    assert "aborted, nothing was stored" in mount.log_text()
    again = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert os.listdir(again.path("v")) == ["kept.txt"]
    finally:
        again.unmount()


# 2. Descriptors shared with child processes ------------------------------------------------


SHELLS = {
    "builtins in a group": "{ echo first; echo second; } > f",
    "programs in a group": "{ /bin/echo first; /bin/echo second; } > f",
    "exec in a script": "exec >f 2>&1; echo first; /bin/echo second; echo to-stderr >&2; echo last",
    "make": "make -s -f {work}/Makefile > f 2>&1",
}
EXPECTED = {
    "builtins in a group": b"first\nsecond\n",
    "programs in a group": b"first\nsecond\n",
    "exec in a script": b"first\nsecond\nto-stderr\nlast\n",
    "make": b"one\ntwo\nthree\n",
}


@pytest.mark.parametrize("name", list(SHELLS))
def test_a_shell_that_shares_its_descriptor_stores_the_whole_output(
    mount: Mount, inprocess: Emulator, tmp_path: Path, name: str
) -> None:
    if name == "make" and shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "Makefile").write_text("all:\n\t@echo one\n\t@/bin/echo two\n\t@echo three >&2\n")
    script = SHELLS[name].replace("{work}", str(tmp_path))
    result = subprocess.run(
        ["bash", "-c", f"cd {mount.path('v')} && {script}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert stored_by_size(inprocess.url) == {len(EXPECTED[name]): tree_hash(EXPECTED[name])}
    assert os.stat(mount.path("v", "f")).st_size == len(EXPECTED[name])
    assert inprocess.calls["UploadArchive"] == 1


def test_a_child_process_then_more_writes_from_the_parent(mount: Mount, inprocess: Emulator) -> None:
    with open(mount.path("v", "log"), "wb") as log:
        log.write(b"parent before\n")
        log.flush()
        subprocess.run([sys.executable, "-c", "print('child')"], stdout=log, check=True)
        log.write(b"parent after\n")
    expected = b"parent before\nchild\nparent after\n"
    assert stored_by_size(inprocess.url) == {len(expected): tree_hash(expected)}


def test_a_failed_upload_reaches_the_close_of_the_process_that_opened_it(mount: Mount, inprocess: Emulator) -> None:
    log = open(mount.path("v", "log"), "wb")  # noqa: SIM115 - its close is what is checked
    log.write(b"parent\n")
    log.flush()
    subprocess.run([sys.executable, "-c", "print('child')"], stdout=log, check=True)  # its close succeeds
    inprocess.settings.fault_rate = 1.0
    try:
        log.write(b"more\n")
        with pytest.raises(OSError) as excinfo:
            log.close()
        assert excinfo.value.errno == errno.EIO
    finally:
        inprocess.settings.fault_rate = 0.0
    assert stored_by_size(inprocess.url) == {}
    assert os.listdir(mount.path("v")) == []


# 3. An open the kernel refuses changes nothing ---------------------------------------------------


def test_replacing_a_file_open_through_passthrough_is_refused_and_changes_nothing(
    inprocess: Emulator, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("FUSE passthrough needs CAP_SYS_ADMIN")
    mount = Mount(tmp_path, inprocess.url, *FAST, "--part-size", str(MiB))
    try:
        mount.path("v").mkdir()
        old = os.urandom(300_000)
        mount.path("v", "doc").write_bytes(old)
        assert read_when_ready(mount.path("v", "doc")) == old
        status = run(sys.executable, "-m", "glacierfs", "status", mount.mountpoint).stdout
        if "passthrough" not in status:
            pytest.skip("this mount has no FUSE passthrough (libfuse < 3.17 or an old kernel)")
        (tmp_path / "new").write_bytes(b"new content")
        with open(mount.path("v", "doc"), "rb") as reader:
            result = run("cp", tmp_path / "new", mount.path("v", "doc"), check=False)
            assert result.returncode != 0 and "busy" in result.stderr.lower(), result.stderr
            assert reader.read() == old
        assert os.stat(mount.path("v", "doc")).st_size == len(old)
        assert stored_by_size(inprocess.url) == {len(old): tree_hash(old)}
        assert inprocess.calls["DeleteArchive"] == 0
        run("cp", tmp_path / "new", mount.path("v", "doc"))  # once the reader is gone
        assert stored_by_size(inprocess.url) == {11: tree_hash(b"new content")}
    finally:
        mount.unmount()


# 4. Rename over a stored file before the new one is stored ---------------------------------


def test_rename_over_a_stored_file_then_an_outage_loses_neither_version(tmp_path: Path) -> None:
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    mount = Mount(tmp_path, server.url, *FAST, "--max-attempts", "2")
    try:
        mount.path("v").mkdir()
        mount.path("v", "doc.txt").write_bytes(b"version one")
        old_id = os.getxattr(mount.path("v", "doc.txt"), "user.glacier.archive-id")
        temp = open(mount.path("v", "doc.txt.tmp"), "wb")  # noqa: SIM115 - its close is what is checked
        temp.write(b"version two, longer")
        os.rename(mount.path("v", "doc.txt.tmp"), mount.path("v", "doc.txt"))
        server.stop()
        with pytest.raises(OSError):
            temp.close()
        assert os.listdir(mount.path("v")) == ["doc.txt"]
        assert os.getxattr(mount.path("v", "doc.txt"), "user.glacier.archive-id") == old_id
        assert os.stat(mount.path("v", "doc.txt")).st_size == len(b"version one")
    finally:
        mount.unmount()
        server.stop()
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    try:
        assert stored_by_size(server.url) == {11: tree_hash(b"version one")}
    finally:
        server.stop()


def test_rename_over_a_stored_file_then_close_replaces_it(mount: Mount, inprocess: Emulator) -> None:
    mount.path("v", "doc.txt").write_bytes(b"version one")
    with open(mount.path("v", "doc.txt.tmp"), "wb") as temp:
        temp.write(b"version two, longer")
        os.rename(mount.path("v", "doc.txt.tmp"), mount.path("v", "doc.txt"))
        assert inprocess.calls["DeleteArchive"] == 0  # not before the new one is stored
    assert stored_by_size(inprocess.url) == {19: tree_hash(b"version two, longer")}
    assert os.listdir(mount.path("v")) == ["doc.txt"]


# 12. rm of a file being written -------------------------------------------------------------


def test_rm_of_a_file_being_written_is_refused(mount: Mount, inprocess: Emulator) -> None:
    with open(mount.path("v", "busy.bin"), "wb") as busy:
        busy.write(b"data")
        result = run("rm", mount.path("v", "busy.bin"), check=False)
        assert result.returncode != 0 and "busy" in result.stderr.lower(), result.stderr
    assert os.listdir(mount.path("v")) == ["busy.bin"]
    assert stored_by_size(inprocess.url) == {4: tree_hash(b"data")}
    assert inprocess.calls["DeleteArchive"] == 0
    run("rm", mount.path("v", "busy.bin"))
    assert stored_by_size(inprocess.url) == {} and os.listdir(mount.path("v")) == []


def test_rm_of_a_file_being_read_deletes_it_and_the_reader_keeps_its_bytes(mount: Mount, inprocess: Emulator) -> None:
    mount.path("v", "r").write_bytes(b"to be read")
    assert read_when_ready(mount.path("v", "r")) == b"to be read"
    with open(mount.path("v", "r"), "rb") as reader:
        run("rm", mount.path("v", "r"))
        assert reader.read() == b"to be read"
    assert stored_by_size(inprocess.url) == {} and os.listdir(mount.path("v")) == []


# 13. Names that are not UTF-8 ------------------------------------------------------------------


def test_a_name_that_is_not_utf8_gets_eilseq_and_a_log_line(mount: Mount) -> None:
    result = subprocess.run(
        ["bash", "-c", f"printf x > {mount.path('v')}/$'bad\\xff\\xfe'"],
        capture_output=True,
        text=True,
        errors="replace",
    )
    assert result.returncode != 0 and "Invalid or incomplete multibyte" in result.stderr, result.stderr
    with pytest.raises(OSError) as excinfo:
        os.mkdir(os.fsencode(mount.path("v")) + b"/dir\xff")
    assert excinfo.value.errno == errno.EILSEQ
    assert "valid UTF-8" in mount.log_text() and "Traceback" not in mount.log_text()
    mount.path("v", "fine").write_bytes(b"still works")
    assert os.listdir(mount.path("v")) == ["fine"]


# The flaky soak test's cause: a file whose close() succeeded is never EBUSY to read ---------


def test_a_file_whose_close_succeeded_opens_for_reading_at_once(mount: Mount, inprocess: Emulator) -> None:
    for number in range(40):
        path = mount.path("v", f"f{number}")
        path.write_bytes(b"" if number % 2 else b"x")
        try:
            open(path, "rb").close()
        except OSError as error:
            assert error.errno == errno.EAGAIN, f"{path.name}: {error}"  # a retrieval, never EBUSY


# 6. A full state disk ---------------------------------------------------------------------------


@pytest.fixture
def small_state_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs where the mount keeps its catalog."""
    with small_tmpfs(tmp_path / "state", "4m") as state:
        yield state


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(bytes(64 * 1024))
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_state_disk_gives_enospc_and_leaves_nothing_unrecorded(
    inprocess: Emulator, tmp_path: Path, small_state_disk: Path
) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        mount.path("v", "old").write_bytes(b"old version")
        old_id = os.getxattr(mount.path("v", "old"), "user.glacier.archive-id")
        filler = fill(small_state_disk)
        codes = []
        for name in ("new", "old"):  # a new file, and an overwrite Glacier stores but the catalog cannot record
            try:
                mount.path("v", name).write_bytes(os.urandom(200_000))
            except OSError as error:
                codes.append(error.errno)
        assert codes == [errno.ENOSPC, errno.ENOSPC]
        assert mount.process.poll() is None
        status = run(sys.executable, "-m", "glacierfs", "status", mount.mountpoint, check=False)
        assert status.returncode == 3  # degraded: repairs held back
        assert "waiting for room on the state disk (or for Glacier) to delete unrecorded archive" in status.stdout
        filler.unlink()
        wait_for(lambda: len(stored_by_size(inprocess.url)) == 1, what="the unrecorded archive to be deleted")
        assert stored_by_size(inprocess.url) == {11: tree_hash(b"old version")}
        assert sorted(os.listdir(mount.path("v"))) == ["old"]
        assert os.getxattr(mount.path("v", "old"), "user.glacier.archive-id") == old_id
        assert read_when_ready(mount.path("v", "old")) == b"old version"
        mount.path("v", "new").write_bytes(b"room again")
        assert os.getxattr(mount.path("v", "new"), "user.glacier.state") == b"stored"
    finally:
        mount.unmount()
    assert "state directory is full" in mount.log_text()
    assert "Traceback" not in mount.log_text()


# Found by trying to break it: bind mounts, lazy unmounts, killed writers, late children --------


@pytest.fixture
def bind_mount(mount: Mount, tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    other = tmp_path / "bound"
    other.mkdir()
    subprocess.run(["mount", "--bind", str(mount.mountpoint), str(other)], check=True)
    yield other
    subprocess.run(["umount", str(other)], check=False)


def test_a_shell_writing_through_a_bind_mount_stores_its_whole_output(
    mount: Mount, inprocess: Emulator, bind_mount: Path
) -> None:
    result = subprocess.run(
        ["bash", "-c", f"{{ echo one; sleep 0.3; echo two; }} > {bind_mount}/v/grp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert stored_by_size(inprocess.url) == {8: tree_hash(b"one\ntwo\n")}


def test_a_lazy_unmount_lets_open_files_finish(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        script = subprocess.Popen(
            [
                "bash",
                "-c",
                f"exec > {mount.path('v', 'f')}; echo 1; (sleep 1; echo child); sleep 0.3; echo parent-after",
            ]
        )
        time.sleep(0.5)
        subprocess.run(["umount", "-l", str(mount.mountpoint)], check=True)
        assert script.wait(timeout=30) == 0
        mount.process.wait(timeout=30)  # the daemon ends once the last file is closed
    finally:
        mount.unmount()
    expected = b"1\nchild\nparent-after\n"
    assert stored_by_size(inprocess.url) == {len(expected): tree_hash(expected)}


def test_a_background_child_that_writes_after_its_shell_closed_is_stored(mount: Mount, inprocess: Emulator) -> None:
    subprocess.run(
        ["bash", "-c", f"exec 3>{mount.path('v', 'f')}; ( sleep 0.5; echo late ) >&3 2>&1 & exec 3>&-"],
        check=True,
        timeout=30,
    )
    wait_for(lambda: stored_by_size(inprocess.url), what="the late child's output")
    assert stored_by_size(inprocess.url) == {5: tree_hash(b"late\n")}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_writer_killed_mid_write_stores_nothing_and_keeps_the_old_version(
    mount: Mount, inprocess: Emulator, signum: int
) -> None:
    mount.path("v", "over").write_bytes(b"old version")
    code = (
        "import sys, time\n"
        "files = [open(name, 'wb') for name in sys.argv[1:]]\n"
        "for f in files:\n"
        "    f.write(b'x' * 500_000); f.flush()\n"
        "print('written', flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(mount.path("v", "over")), str(mount.path("v", "new"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "written\n"
    writer.send_signal(signum)
    writer.wait(timeout=30)
    writer.stdout.close()
    assert sorted(os.listdir(mount.path("v"))) == ["over"]
    assert os.stat(mount.path("v", "over")).st_size == 11
    assert stored_by_size(inprocess.url) == {11: tree_hash(b"old version")}
    assert inprocess.calls["DeleteArchive"] == 0
    assert "was killed by a signal" in mount.log_text()


def test_touch_sets_the_time_to_now_and_touch_a_leaves_it(mount: Mount) -> None:
    path = mount.path("v", "t")
    run("touch", path)
    assert abs(os.stat(path).st_mtime - time.time()) < 60
    run("touch", "-d", "2020-02-03 04:05:06 UTC", path)
    assert time.gmtime(os.stat(path).st_mtime)[:6] == (2020, 2, 3, 4, 5, 6)
    run("touch", "-a", path)
    assert time.gmtime(os.stat(path).st_mtime)[:6] == (2020, 2, 3, 4, 5, 6)


def test_a_second_mount_of_the_same_catalog_is_refused(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    with open(mount.path("v", "open"), "wb") as writing:
        writing.write(bytes(3 * MiB))
        try:
            second = Mount(tmp_path / "second", inprocess.url, *FAST, "--state-dir", str(mount.state))
        except RuntimeError as error:
            assert "in use by another glacierfs mount" in str(error)
        else:
            second.unmount()
            pytest.fail("a second mount of the same catalog was allowed")
    assert stored_by_size(inprocess.url) == {3 * MiB: tree_hash(bytes(3 * MiB))}


def test_unmounting_before_a_full_state_disk_has_room_says_what_is_left(
    inprocess: Emulator, tmp_path: Path, small_state_disk: Path
) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        mount.path("v", "old").write_bytes(b"old version")
        fill(small_state_disk)
        with pytest.raises(OSError) as excinfo:
            mount.path("v", "old").write_bytes(b"new version")
        assert excinfo.value.errno == errno.ENOSPC
    finally:
        mount.unmount()
    assert mount.process.returncode == 0
    assert "unmounted before there was room to delete unrecorded archive" in mount.log_text()
    assert "Uncaught exception" not in mount.log_text()
