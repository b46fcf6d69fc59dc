"""Money and reads through a real mount: a job's output is never paid for twice,
the cost guard holds under parallel opens, an outage is waited out, and the
cache directory is never trusted blindly."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, read_errno, read_when_ready, run, wait_for

from .conftest import MiB
from .test_reads import FAST, put, random_bytes, state

pytestmark = pytest.mark.mount

KiB = 1 << 10


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "content").rglob("*.val"))


# 7 ----------------------------------------------------------------------------------


def test_files_evicted_from_a_small_cache_are_read_again_without_new_jobs(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-size", "400K")
    try:
        files = {"x": random_bytes(300 * KiB, 1), "y": random_bytes(300 * KiB, 2)}
        paths = {name: put(mount, tmp_path, name, data) for name, data in files.items()}
        for name in ("x", "y", "x", "y"):
            assert read_when_ready(paths[name]) == files[name]
        assert inprocess.calls["InitiateJob"] == 2
        assert "downloading them again from job" in mount.log_text()
    finally:
        mount.unmount()


def test_a_ranged_archive_larger_than_the_cache_costs_one_job_per_block(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(
        tmp_path,
        inprocess.url,
        *FAST,
        "--cache-size",
        "3M",
        "--ranged-threshold",
        "1M",
        "--range-size",
        "1M",
        "--wait",
        "20",
    )
    try:
        data = random_bytes(5 * MiB + MiB // 2, 3)
        path = put(mount, tmp_path, "ranged.bin", data)
        for _ in range(3):  # each pass evicts the blocks the next one starts with
            assert subprocess.run(["cat", str(path)], capture_output=True, check=True, timeout=120).stdout == data
        assert inprocess.calls["InitiateJob"] == 6
    finally:
        mount.unmount()


def test_a_remount_with_a_new_cache_directory_reuses_the_job(inprocess: Emulator, tmp_path: Path) -> None:
    data = random_bytes(MiB + 7, 4)
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(tmp_path / "cache-1"))
    try:
        path = put(mount, tmp_path, "r.bin", data)
        assert read_when_ready(path) == data
    finally:
        mount.unmount()
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(tmp_path / "cache-2"))
    try:
        assert read_when_ready(mount.path("v", "r.bin")) == data
        assert inprocess.calls["InitiateJob"] == 1
    finally:
        mount.unmount()


# 8 ----------------------------------------------------------------------------------


def test_parallel_opens_start_no_more_jobs_than_max_retrieval_jobs(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--max-retrieval-jobs", "5")
    try:
        paths = [put(mount, tmp_path, f"f{i:02}", random_bytes(1000, i)) for i in range(30)]
        inprocess.settings.latency_ms = 300
        inprocess.settings.job_delay = 60
        listing = "\n".join(str(path) for path in paths)
        subprocess.run(
            ["xargs", "-P", "30", "-n", "1", "head", "-c1"], input=listing, text=True, capture_output=True, timeout=120
        )
        assert inprocess.calls["InitiateJob"] == 5
        assert "--max-retrieval-jobs" in mount.log_text()
    finally:
        mount.unmount()


# 9 ----------------------------------------------------------------------------------


def test_each_chunk_of_a_job_output_is_downloaded_once(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        data = random_bytes(40 * MiB, 5)
        path = put(mount, tmp_path, "forty.bin", data)
        inprocess.settings.latency_ms = 100
        assert read_when_ready(path, timeout=60) == data
        time.sleep(1)  # a few more rounds of the poller
        assert inprocess.calls["GetJobOutput"] == 3  # 16 MiB chunks
    finally:
        mount.unmount()


# 10 ---------------------------------------------------------------------------------


def test_an_outage_of_get_job_output_is_waited_out(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--max-attempts", "2")
    try:
        data = random_bytes(2 * MiB, 6)
        path = put(mount, tmp_path, "outage.bin", data)
        inprocess.settings.fail_operation = "GetJobOutput"
        inprocess.settings.fail_until = time.time() + 4
        assert read_errno(path) == errno.EAGAIN
        wait_for(lambda: "trying again in" in mount.log_text(), what="a failed download")
        assert read_errno(path) == errno.EAGAIN
        assert state(path).startswith("retrieving")
        assert read_when_ready(path, timeout=40) == data
        assert inprocess.calls["InitiateJob"] == 1
        assert "failed verification" not in mount.log_text()
    finally:
        mount.unmount()


def test_after_bytes_fail_verification_retrieve_starts_a_new_job(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        files = {"a": random_bytes(MiB, 7), "b": random_bytes(MiB, 8)}
        paths = {name: put(mount, tmp_path, name, data) for name, data in files.items()}
        inprocess.settings.corrupt_outputs = 1000
        for path in paths.values():
            verdict = wait_for(lambda path=path: read_errno(path) not in (errno.EAGAIN, None) and read_errno(path))
            assert verdict == errno.EIO
            assert state(path).startswith("failed")
        inprocess.settings.corrupt_outputs = 0
        assert inprocess.calls["InitiateJob"] == 2
        os.setxattr(paths["a"], "user.glacier.retrieve", b"Standard")
        started = run(*GLACIERFS, "retrieve", "--yes", paths["b"])
        assert "Started 1 retrieval job(s)" in started.stdout
        for name, path in paths.items():
            assert read_when_ready(path) == files[name]
        assert inprocess.calls["InitiateJob"] == 4
    finally:
        mount.unmount()


# 11 ---------------------------------------------------------------------------------


def test_a_cache_file_changed_behind_the_mount_is_never_served(inprocess: Emulator, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(cache_dir))
    try:
        data = random_bytes(2 * MiB, 9)
        path = put(mount, tmp_path, "t.bin", data)
        assert read_when_ready(path) == data
        [stored] = cache_files(cache_dir)
        with open(stored, "r+b") as changed:
            changed.seek(MiB)
            byte = changed.read(1)
            changed.seek(MiB)
            changed.write(bytes([byte[0] ^ 0x01]))
        assert read_when_ready(path) == data  # fetched again, from the same job
        assert "changed behind the mount's back" in mount.log_text()
        assert inprocess.calls["InitiateJob"] == 1
    finally:
        mount.unmount()


def test_a_cache_file_deleted_by_hand_is_fetched_again(inprocess: Emulator, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(cache_dir))
    try:
        data = random_bytes(MiB + 1, 10)
        path = put(mount, tmp_path, "d.bin", data)
        assert read_when_ready(path) == data
        assert state(path) == "cached"
        [stored] = cache_files(cache_dir)
        stored.unlink()
        assert state(path) != "cached"
        assert read_when_ready(path) == data
        assert state(path) == "cached"
        assert inprocess.calls["InitiateJob"] == 1
    finally:
        mount.unmount()


def test_a_removed_cache_directory_is_made_anew(inprocess: Emulator, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(cache_dir))
    try:
        files = {"p": random_bytes(MiB, 11), "q": random_bytes(MiB, 12)}
        paths = {name: put(mount, tmp_path, name, data) for name, data in files.items()}
        assert read_when_ready(paths["p"]) == files["p"]
        shutil.rmtree(cache_dir)
        assert state(paths["p"]) != "cached"  # getfattr still answers, and truthfully
        for name, path in paths.items():
            assert read_when_ready(path) == files[name]
        assert cache_dir.is_dir() and len(cache_files(cache_dir)) == 2
        assert inprocess.calls["InitiateJob"] == 2
        assert mount.process.poll() is None
    finally:
        mount.unmount()
