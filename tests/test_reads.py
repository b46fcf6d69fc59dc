"""Reads through a real mount: retrieval jobs, never paid twice, verified into the cache."""

from __future__ import annotations

import errno
import mmap
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, read_errno, read_when_ready, run

from .conftest import MiB, boto_client

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--part-size", str(MiB))


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def put(mount: Mount, tmp_path: Path, name: str, data: bytes, vault: str = "v") -> Path:
    if not mount.path(vault).exists():
        mount.path(vault).mkdir()
    source = tmp_path / f"src-{name}"
    source.write_bytes(data)
    run("cp", source, mount.path(vault, name))
    return mount.path(vault, name)


def state(path: Path) -> str:
    return os.getxattr(path, "user.glacier.state").decode()


@pytest.fixture
def mount(inprocess: Emulator, tmp_path: Path) -> Iterator[Mount]:
    mounted = Mount(tmp_path, inprocess.url, *FAST)
    yield mounted
    mounted.unmount()


@pytest.mark.parametrize("delay", [0.0, 1.5])
def test_eagain_then_the_verified_bytes(mount: Mount, inprocess: Emulator, tmp_path: Path, delay: float) -> None:
    data = random_bytes(3 * MiB + 11)
    path = put(mount, tmp_path, "a.bin", data)
    inprocess.settings.job_delay = delay
    result = run("cat", path, check=False)
    assert result.returncode != 0 and "Resource temporarily unavailable" in result.stderr
    if delay:
        assert state(path).startswith("retrieving job=")
        assert "tier=Standard" in state(path) and "requested=" in state(path)
    assert read_when_ready(path) == data
    assert state(path) == "cached"
    assert "being retrieved by job" in mount.log_text()
    run("cmp", tmp_path / "src-a.bin", path)  # and again, from the cache
    assert inprocess.calls["InitiateJob"] == 1


def test_wait_option_blocks_open_until_cached(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--wait", "20")
    try:
        data = random_bytes(2 * MiB)
        path = put(mount, tmp_path, "w.bin", data)
        inprocess.settings.job_delay = 1.0
        start = time.monotonic()
        assert path.read_bytes() == data
        assert time.monotonic() - start >= 0.9
    finally:
        mount.unmount()


def test_eight_concurrent_readers_share_one_job(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(MiB + 5)
    path = put(mount, tmp_path, "shared.bin", data)
    inprocess.settings.job_delay = 1.0
    results: list[bytes | int] = []

    def reader() -> None:
        try:
            results.append(read_when_ready(path))
        except OSError as error:
            results.append(error.errno)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [data] * 8
    assert inprocess.calls["InitiateJob"] == 1


def test_job_survives_a_remount(inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(MiB)
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        path = put(mount, tmp_path, "r.bin", data)
        inprocess.settings.job_delay = 2.0
        assert read_errno(path) == errno.EAGAIN
    finally:
        mount.unmount()
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert read_errno(mount.path("v", "r.bin")) == errno.EAGAIN
        assert read_when_ready(mount.path("v", "r.bin")) == data
    finally:
        mount.unmount()
    assert inprocess.calls["InitiateJob"] == 1


def test_job_started_by_another_client_is_reused(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(MiB + 100)
    path = put(mount, tmp_path, "elsewhere.bin", data)
    archive_id = os.getxattr(path, "user.glacier.archive-id").decode()
    boto_client(inprocess.url).initiate_job(
        vaultName="v", jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )
    assert read_when_ready(path) == data
    assert inprocess.calls["InitiateJob"] == 1  # the one plain boto3 started


def test_a_corrupted_chunk_is_fetched_again(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(2 * MiB)
    path = put(mount, tmp_path, "flip.bin", data)
    inprocess.settings.corrupt_outputs = 1
    assert read_when_ready(path) == data
    assert "failed verification" in mount.log_text()


def test_corrupt_output_is_never_served(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(2 * MiB)
    path = put(mount, tmp_path, "bad.bin", data)
    inprocess.settings.corrupt_outputs = 1000
    deadline = time.monotonic() + 20
    while (code := read_errno(path)) == errno.EAGAIN:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert code == errno.EIO
    assert state(path).startswith("failed")
    assert "nothing was cached" in mount.log_text()
    assert read_errno(path) == errno.EIO  # still refused, and no second paid job
    assert inprocess.calls["InitiateJob"] == 1


def test_cost_guard_refuses_with_edquot(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--max-retrieval-bytes", "3M", "--max-retrieval-jobs", "2")
    try:
        big = put(mount, tmp_path, "big.bin", random_bytes(4 * MiB))
        assert read_errno(big) == errno.EDQUOT
        assert "--max-retrieval-bytes" in mount.log_text()
        small = [put(mount, tmp_path, f"s{i}", random_bytes(1000, i)) for i in range(3)]
        assert [read_errno(p) for p in small[:2]] == [errno.EAGAIN, errno.EAGAIN]
        assert read_errno(small[2]) == errno.EDQUOT
        assert "--max-retrieval-jobs" in mount.log_text()
        assert inprocess.calls["InitiateJob"] == 2
    finally:
        mount.unmount()


def test_eviction_never_takes_an_open_archive(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-size", "5M")
    try:
        files = {name: random_bytes(3 * MiB, i) for i, name in enumerate(["a", "b", "c"])}
        paths = {name: put(mount, tmp_path, name, data) for name, data in files.items()}
        assert read_when_ready(paths["a"]) == files["a"]
        with open(paths["a"], "rb") as held:
            first = held.read(1000)
            for name in ("b", "c"):  # each pushes the cache past 5 MiB
                assert read_when_ready(paths[name]) == files[name]
            assert state(paths["a"]) != "cached"  # evicted from the cache...
            assert first + held.read() == files["a"]  # ...yet its reader reads on
        assert state(paths["c"]) == "cached"  # the newest stays
        assert inprocess.calls["InitiateJob"] == 3  # and nothing was paid for twice
    finally:
        mount.unmount()


def test_small_read_of_a_large_archive_retrieves_a_range(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(
        tmp_path,
        inprocess.url,
        "--poll-interval",
        "0.2",
        "--part-size",
        str(8 * MiB),
        "--ranged-threshold",
        "32M",
        "--range-size",
        "4M",
    )
    try:
        data = random_bytes(64 * MiB, 7)
        path = put(mount, tmp_path, "large.bin", data)
        offset = 41 * MiB + 123

        def read_slice() -> bytes:
            # os.pread: Python's file objects turn EAGAIN from read(2) into None.
            fd = os.open(path, os.O_RDONLY)
            try:
                return os.pread(fd, MiB, offset)
            finally:
                os.close(fd)

        with pytest.raises(OSError) as excinfo:
            read_slice()
        assert excinfo.value.errno == errno.EAGAIN
        deadline = time.monotonic() + 20
        while True:
            try:
                got = read_slice()
                break
            except OSError as error:
                assert error.errno == errno.EAGAIN and time.monotonic() < deadline
                time.sleep(0.1)
        assert got == data[offset : offset + MiB]
        jobs = boto_client(inprocess.url).list_jobs(vaultName="v")["JobList"]
        assert [job["RetrievalByteRange"] for job in jobs] == [f"{40 * MiB}-{44 * MiB - 1}"]
    finally:
        mount.unmount()


def test_retrieve_and_status_commands(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    files = {f"d/f{i}": random_bytes(MiB // 2 + i, i) for i in range(3)}
    mount.path("v").mkdir()
    mount.path("v", "d").mkdir()
    for rel, data in files.items():
        put(mount, tmp_path, rel.replace("/", "_"), data)
        os.rename(mount.path("v", rel.replace("/", "_")), mount.path("v", rel))
    inprocess.settings.job_delay = 1.0
    refused = subprocess.run(
        [*GLACIERFS, "retrieve", str(mount.path("v"))],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert refused.returncode != 0 and "3 archive(s)" in refused.stdout
    assert inprocess.calls["InitiateJob"] == 0
    started = run(*GLACIERFS, "retrieve", "--yes", "--tier", "Expedited", "--wait", mount.path("v"))
    assert "Started 3 retrieval job(s)" in started.stdout and "3/3 cached" in started.stdout
    assert inprocess.calls["InitiateJob"] == 3
    jobs = boto_client(inprocess.url).list_jobs(vaultName="v")["JobList"]
    assert {job["Tier"] for job in jobs} == {"Expedited"}
    for rel, data in files.items():
        assert mount.path("v", rel).read_bytes() == data
    status = run(*GLACIERFS, "status", mount.mountpoint).stdout
    assert "uploads in progress: 0" in status and "cache:" in status and "retrieval budget left" in status


def test_cache_writes_reads_own_uploads_back_without_a_job(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(
        tmp_path, inprocess.url, *FAST, "--cache-writes", "--cache-size", "8M", "--cache-dir", str(tmp_path / "cached")
    )
    try:
        multipart = random_bytes(3 * MiB + 11, 1)
        single = random_bytes(MiB // 2, 2)
        for name, data in (("multi.bin", multipart), ("single.bin", single), ("empty", b"")):
            assert put(mount, tmp_path, name, data).read_bytes() == data
            assert state(mount.path("v", name)) == ("cached" if data else "empty")
        assert "in 2 item(s)" in run(*GLACIERFS, "status", mount.mountpoint).stdout
        # Larger than the cache: no copy is kept, so reading it back needs a job.
        big = put(mount, tmp_path, "big.bin", random_bytes(9 * MiB, 3))
        assert inprocess.calls["InitiateJob"] == 0
        assert read_errno(big) == errno.EAGAIN
        assert inprocess.calls["InitiateJob"] == 1
        assert "not keeping a copy of this upload: it is larger than the cache" in mount.log_text()
    finally:
        mount.unmount()


def test_cache_writes_keeps_nothing_of_a_failed_upload(inprocess: Emulator, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cached"
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-writes", "--cache-dir", str(cache_dir))
    try:
        mount.path("v").mkdir()
        source = tmp_path / "src"
        source.write_bytes(random_bytes(3 * MiB, 4))
        inprocess.settings.fault_rate = 1.0
        assert run("cp", source, mount.path("v", "f"), check=False).returncode != 0
        inprocess.settings.fault_rate = 0.0
        assert not mount.path("v", "f").exists()
        assert list((cache_dir / "incoming").iterdir()) == []
        # Right after the faults, status may rightly say Glacier is unreachable (exit 3).
        assert "in 0 item(s)" in run(*GLACIERFS, "status", mount.mountpoint, check=False).stdout
    finally:
        mount.unmount()


@pytest.mark.parametrize("kernel", [True, False], ids=["passthrough", "daemon"])
def test_cached_archives_read_by_either_path(inprocess: Emulator, tmp_path: Path, kernel: bool) -> None:
    """FUSE passthrough (root, libfuse >= 3.17 from scripts/setup) and the daemon's
    own path: overlapping opens (which share one backing file), mmap, concurrent
    readers and a reopen after the last close all read the right bytes."""
    if kernel and os.geteuid() != 0:
        pytest.skip("FUSE passthrough needs CAP_SYS_ADMIN")
    mount = Mount(tmp_path, inprocess.url, *FAST, *([] if kernel else ["--no-passthrough"]))
    try:
        data = random_bytes(5 * MiB + 3, 5)
        path = put(mount, tmp_path, "p.bin", data)
        assert read_when_ready(path) == data
        read_by = "the kernel (FUSE passthrough)" if kernel else "glacierfs"
        assert f"read by {read_by}" in run(*GLACIERFS, "status", mount.mountpoint).stdout
        with open(path, "rb") as first, open(path, "rb") as second:
            assert first.read(MiB) == data[:MiB]
            second.seek(4 * MiB)
            assert second.read() == data[4 * MiB :]
            with mmap.mmap(first.fileno(), 0, prot=mmap.PROT_READ) as mapped:
                assert mapped[MiB : 2 * MiB] == data[MiB : 2 * MiB]
        results: list[bytes] = []
        readers = [threading.Thread(target=lambda: results.append(path.read_bytes())) for _ in range(6)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        assert results == [data] * 6
        assert path.read_bytes() == data
        assert "FUSE passthrough refused" not in mount.log_text()
        assert "Traceback" not in mount.log_text()
    finally:
        mount.unmount()
