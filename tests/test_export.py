"""`glacierfs export` on a real mount against the served emulator (job delay 0),
checked at DEST with real files and at the "service" with plain boto3."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator, control
from glacierfs.pacing import DAY, HOUR, Pacer
from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, read_when_ready, wait_for

from .conftest import boto_client, small_tmpfs

MiB = 1 << 20
pytestmark = pytest.mark.mount
MTIME = 1_600_000_000  # 2020-09-13


@pytest.fixture(scope="module")
def server() -> Iterator[ServedEmulator]:
    emulator = ServedEmulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def url(server: ServedEmulator) -> Iterator[str]:
    control.reset(server.url)
    yield server.url
    control.reset(server.url)


@pytest.fixture
def mount(tmp_path: Path, url: str) -> Iterator[Mount]:
    # A cache far smaller than the vault: the export never goes through it.
    running = Mount(tmp_path / "m", url, "--cache-size", "1M", "--poll-interval", "0.2")
    try:
        yield running
    finally:
        running.unmount()


def export(mount: Mount, source: str, dest: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [*GLACIERFS, "export", str(mount.path(source)), str(dest), "--poll-interval", "0.1", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def jobs(url: str, vault: str) -> list[dict]:
    client = boto_client(url)
    return [j for j in client.list_jobs(vaultName=vault)["JobList"] if j["Action"] == "ArchiveRetrieval"]


def fill(mount: Mount, vault: str, files: dict[str, bytes], mode: int = 0o640) -> None:
    mount.path(vault).mkdir()
    for rel in files:
        mount.path(vault, rel).parent.mkdir(parents=True, exist_ok=True)
    fill_more(mount, vault, files, mode)


def fill_more(mount: Mount, vault: str, files: dict[str, bytes], mode: int = 0o640) -> None:
    for rel, data in files.items():
        path = mount.path(vault, rel)
        path.write_bytes(data)
        os.chmod(path, mode)
        os.utime(path, (MTIME, MTIME + len(data) % 1000))


def sample(count: int, size: int = 3000) -> dict[str, bytes]:
    return {f"d{i % 3}/f{i}.bin": os.urandom(size + i) for i in range(count)}


def test_export_to_a_directory_keeps_bytes_times_modes_with_one_job_each(mount: Mount, url: str, tmp_path: Path):
    files = {"a.txt": b"hello", "dir/big.bin": os.urandom(2 * MiB + 12345), "dir/sub/c.bin": os.urandom(70_000)}
    fill(mount, "v1", files)
    mount.path("v1", "empty-dir", "inner").mkdir(parents=True)
    mount.path("v1", "dir", "empty.txt").write_bytes(b"")
    os.utime(mount.path("v1", "dir", "empty.txt"), (MTIME, MTIME))
    dest = tmp_path / "out"

    result = export(mount, "v1", dest, "--yes", "--chunk-size", "1M")
    assert result.returncode == 0, result.stderr
    assert "3 with new Bulk jobs" in result.stdout and "estimated $" in result.stdout
    for rel, data in files.items():
        got = dest / rel
        assert got.read_bytes() == data
        assert got.stat().st_mtime == MTIME + len(data) % 1000
        assert got.stat().st_mode & 0o777 == 0o640
    assert (dest / "dir" / "empty.txt").read_bytes() == b""
    assert (dest / "dir" / "empty.txt").stat().st_mtime == MTIME
    assert (dest / "empty-dir" / "inner").is_dir()
    assert not [p for p in dest.rglob("*") if p.name.endswith(".glacierfs-export")]
    listed = jobs(url, "v1")
    assert len(listed) == 3 and all(j["Tier"] == "Bulk" for j in listed)

    again = export(mount, "v1", dest, "--yes")
    assert again.returncode == 0, again.stderr
    assert "0 new job(s)" in again.stdout
    assert len(jobs(url, "v1")) == 3


def test_a_directory_of_a_vault_and_a_job_the_mount_started_is_reused(mount: Mount, url: str, tmp_path: Path):
    files = {"keep/a.bin": os.urandom(5000), "keep/b.bin": os.urandom(6000), "other/c.bin": os.urandom(10)}
    fill(mount, "v2", files)
    assert read_when_ready(mount.path("v2", "keep", "a.bin")) == files["keep/a.bin"]  # the mount's own job
    assert len(jobs(url, "v2")) == 1
    dest = tmp_path / "out"
    result = export(mount, "v2/keep", dest, "--yes")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin", "b.bin"]
    assert (dest / "b.bin").read_bytes() == files["keep/b.bin"]
    assert "1 reused" in result.stdout
    assert len(jobs(url, "v2")) == 2


def test_source_outside_a_mount_and_unconfirmed_runs_are_refused(mount: Mount, tmp_path: Path):
    fill(mount, "v3", {"a": b"x" * 10})
    outside = subprocess.run(
        [*GLACIERFS, "export", str(tmp_path), str(tmp_path / "o")], capture_output=True, text=True, timeout=30
    )
    assert outside.returncode == 1 and "not inside a running glacierfs mount" in outside.stderr
    unconfirmed = export(mount, "v3", tmp_path / "o")
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert not (tmp_path / "o").exists()


def test_resume_after_kill_9_starts_no_second_job(mount: Mount, url: str, tmp_path: Path):
    files = sample(12)
    fill(mount, "v4", files)
    dest = tmp_path / "out"
    control.configure(url, latency_ms=120.0)
    command = [*GLACIERFS, "export", str(mount.path("v4")), str(dest), "--yes", "--poll-interval", "0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len([p for p in dest.rglob("*.bin")]) >= 3, timeout=60, what="a few files exported")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    done_before = len(list(dest.rglob("*.bin")))
    assert done_before < 12
    control.configure(url, latency_ms=0.0)
    result = export(mount, "v4", dest, "--yes")
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert not [p for p in dest.rglob("*") if p.name.endswith(".glacierfs-export")]
    assert len(jobs(url, "v4")) == 12


def test_an_expired_job_output_starts_exactly_one_new_job(mount: Mount, url: str, tmp_path: Path):
    fill(mount, "v5", {"a.bin": os.urandom(4000)})
    dest = tmp_path / "out"
    control.configure(url, job_delay=3600.0)
    first = export(mount, "v5", dest, "--yes", "--no-wait")
    assert first.returncode == 3, first.stderr
    [old] = jobs(url, "v5")
    # Three days on: the job completed after an hour, and its output is gone a day later.
    control.configure(url, job_delay=0.0, clock_offset=3 * 86400.0)
    second = export(mount, "v5", dest, "--yes")
    assert second.returncode == 0, second.stderr
    assert "expired" in second.stderr
    [new] = jobs(url, "v5")
    assert new["JobId"] != old["JobId"]
    assert "1 new job(s)" in second.stdout
    assert (dest / "a.bin").stat().st_size == 4000


def test_an_existing_dest_file_is_left_alone_unless_overwrite(mount: Mount, url: str, tmp_path: Path):
    files = {"same.bin": os.urandom(3000), "other.bin": os.urandom(3000)}
    fill(mount, "v6", files)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "same.bin").write_bytes(files["same.bin"])
    (dest / "other.bin").write_bytes(b"mine")
    result = export(mount, "v6", dest, "--yes")
    assert result.returncode == 1
    assert "other.bin: exists at the destination with other content" in result.stderr
    assert (dest / "other.bin").read_bytes() == b"mine"
    assert jobs(url, "v6") == []  # the same bytes were already there: no job for them
    replaced = export(mount, "v6", dest, "--yes", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert (dest / "other.bin").read_bytes() == files["other.bin"]
    assert len(jobs(url, "v6")) == 1


def test_a_full_dest_disk_stops_cleanly_and_resumes(mount: Mount, url: str, tmp_path: Path):
    files = {f"f{i}.bin": os.urandom(MiB + i) for i in range(4)}
    fill(mount, "v7", files)
    with small_tmpfs(tmp_path / "small", "2600k") as dest:
        result = export(mount, "v7", dest, "--yes", "--concurrency", "1")
        assert result.returncode == 3, result.stderr
        assert "full" in result.stderr and "run the same command again" in result.stderr
        assert not [p for p in dest.rglob("*") if p.name.endswith(".glacierfs-export")]
        for path in dest.iterdir():
            assert path.read_bytes() == files[path.name]  # nothing half-written under a final name
        subprocess.run(["mount", "-o", "remount,size=10m", str(dest)], check=True)
        resumed = export(mount, "v7", dest, "--yes")
        assert resumed.returncode == 0, resumed.stderr
        assert {p.name: p.read_bytes() for p in dest.iterdir()} == files
    assert len(jobs(url, "v7")) == 4


def test_pacing_with_a_tiny_quota(mount: Mount, url: str, tmp_path: Path):
    fill(mount, "v8", sample(4, 1000))
    dest = tmp_path / "out"
    first = export(mount, "v8", dest, "--yes", "--no-wait", "--max-jobs-per-hour", "2")
    assert first.returncode == 3, first.stderr
    assert len(jobs(url, "v8")) == 2 and len(list(dest.rglob("*.bin"))) == 2
    second = export(mount, "v8", dest, "--yes", "--no-wait", "--max-jobs-per-hour", "2")
    assert second.returncode == 3, second.stderr
    assert len(jobs(url, "v8")) == 2  # the hour's quota is spent, across runs
    daily = export(mount, "v8", dest, "--yes", "--no-wait", "--max-bytes-per-day", "3000")
    assert daily.returncode == 3, daily.stderr
    assert len(jobs(url, "v8")) == 2  # 2 jobs of ~1000 bytes used most of 3000 bytes
    free = export(mount, "v8", dest, "--yes")
    assert free.returncode == 0, free.stderr
    assert len(jobs(url, "v8")) == 4 and len(list(dest.rglob("*.bin"))) == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_pacer_spreads_jobs_over_hours_and_days_with_a_fake_clock():
    clock = FakeClock()
    started: list[tuple[float, int]] = []

    def history(since: float) -> list[tuple[float, int]]:
        return [entry for entry in started if entry[0] >= since]

    pacer = Pacer(history, max_bytes_per_day=100, max_jobs_per_hour=2, clock=clock)
    for _ in range(2):
        assert pacer.may_start(10)
        started.append((clock.now, 10))
        clock.now += 60
    assert not pacer.may_start(10)
    assert pacer.when(10) == started[0][0] + HOUR
    clock.now = started[0][0] + HOUR
    assert pacer.may_start(10)
    started.append((clock.now, 70))
    clock.now += 2 * HOUR
    assert not pacer.may_start(20)  # 90 of 100 bytes spent in the last day
    assert pacer.when(20) == started[0][0] + DAY
    assert pacer.may_start(10)
    clock.now = started[1][0] + DAY
    assert pacer.may_start(20)
    held = pacer.refused("PolicyEnforcedException")
    assert not pacer.may_start(1) and pacer.when(1) == held
    clock.now = held
    assert pacer.may_start(1)


def test_export_is_quick_to_wait_while_jobs_are_in_progress(mount: Mount, url: str, tmp_path: Path):
    """Jobs still in progress: --no-wait leaves them running, a later run downloads them."""
    fill(mount, "v9", {"a.bin": b"a" * 100})
    control.configure(url, job_delay=2.0)
    started = time.monotonic()
    result = export(mount, "v9", tmp_path / "out", "--yes", "--no-wait")
    assert result.returncode == 3 and time.monotonic() - started < 20
    time.sleep(2.1)
    done = export(mount, "v9", tmp_path / "out", "--yes")
    assert done.returncode == 0, done.stderr
    assert len(jobs(url, "v9")) == 1


def s3_client(url: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


def test_export_to_s3_verifies_before_completing_and_keeps_tree_hash_and_mtime(mount: Mount, url: str, tmp_path: Path):
    from glacierfs.treehash import tree_hash

    files = {"small.bin": os.urandom(5000), "dir/big.bin": os.urandom(9 * MiB + 7)}
    fill(mount, "v10", files)
    mount.path("v10", "dir", "empty.txt").write_bytes(b"")
    mount.path("v10", "hollow").mkdir()
    s3 = s3_client(url)
    s3.create_bucket(Bucket="exported")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": url}
    command = [*GLACIERFS, "export", str(mount.path("v10")), "s3://exported/backup", "--yes", "--poll-interval", "0.1"]
    result = subprocess.run([*command, "--chunk-size", "8M"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        got = s3.get_object(Bucket="exported", Key=f"backup/{rel}")
        assert got["Body"].read() == data
        assert got["Metadata"]["glacier-tree-hash"] == tree_hash(data)
        assert float(got["Metadata"]["mtime"]) == MTIME + len(data) % 1000
    assert s3.get_object(Bucket="exported", Key="backup/dir/empty.txt")["Body"].read() == b""
    assert s3.head_object(Bucket="exported", Key="backup/hollow/")["ContentLength"] == 0
    assert s3.list_multipart_uploads(Bucket="exported").get("Uploads", []) == []
    assert len(jobs(url, "v10")) == 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0 and "0 new job(s)" in again.stdout, again.stderr
    assert len(jobs(url, "v10")) == 2

    missing = subprocess.run([*command[:5], "s3://no-such-bucket/x", "--yes"], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "bucket no-such-bucket does not exist" in missing.stderr
    too_long = subprocess.run(
        [*command[:5], "s3://exported/" + "p" * 1020, "--yes"], capture_output=True, text=True, env=env, timeout=60
    )
    assert too_long.returncode == 1 and "S3 allows 1,024" in too_long.stderr
    assert len(jobs(url, "v10")) == 2


def test_bytes_that_fail_verification_never_appear_at_dest(mount: Mount, url: str, tmp_path: Path):
    fill(mount, "v11", {"a.bin": os.urandom(9 * MiB)})  # to S3: a multipart upload of two parts, aborted
    s3 = s3_client(url)
    s3.create_bucket(Bucket="checked")
    control.configure(url, corrupt_outputs=100)
    local = export(mount, "v11", tmp_path / "out", "--yes", "--chunk-size", "1M")
    assert local.returncode == 1 and "failed: a.bin" in local.stderr and "tree hash" in local.stderr
    assert list((tmp_path / "out").iterdir()) == []
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": url}
    command = [*GLACIERFS, "export", str(mount.path("v11")), "s3://checked/p", "--yes", "--poll-interval", "0.1"]
    remote = subprocess.run([*command, "--chunk-size", "8M"], capture_output=True, text=True, timeout=60, env=env)
    assert remote.returncode == 1 and "failed: a.bin" in remote.stderr
    assert s3.list_objects_v2(Bucket="checked").get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket="checked").get("Uploads", []) == []
    assert len(jobs(url, "v11")) == 1


def test_a_data_retrieval_policy_slows_the_export_down_without_failing_it(mount: Mount, url: str, tmp_path: Path):
    fill(mount, "v12", {"a.bin": os.urandom(2000), "b.bin": os.urandom(2000)})
    client = boto_client(url)
    policy = {"Rules": [{"Strategy": "BytesPerHour", "BytesPerHour": 2500}]}
    client.set_data_retrieval_policy(Policy=policy)
    try:
        # The policy governs Standard retrievals, as the service's does.
        result = export(mount, "v12", tmp_path / "out", "--yes", "--no-wait", "--tier", "Standard")
        assert result.returncode == 3, result.stderr  # stopped to resume later, not failed
        assert "0 failed" in result.stdout and "refused a retrieval job" in result.stderr
        assert len(jobs(url, "v12")) == 1
        client.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "None"}]})
        done = export(mount, "v12", tmp_path / "out", "--yes")
        assert done.returncode == 0, done.stderr
        assert len(jobs(url, "v12")) == 2
    finally:
        client.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "None"}]})


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(mount: Mount, url: str, tmp_path: Path):
    files = sample(8)
    fill(mount, "v13", files)
    dest = tmp_path / "out"
    control.configure(url, latency_ms=100.0)
    command = [*GLACIERFS, "export", str(mount.path("v13")), str(dest), "--yes", "--poll-interval", "0.1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(list(dest.rglob("*.bin"))) >= 2, timeout=60, what="a few files exported")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and "run the same command again" in stderr
    assert not [p for p in dest.rglob("*") if p.name.endswith(".glacierfs-export")]
    control.configure(url, latency_ms=0.0)
    result = export(mount, "v13", dest, "--yes")
    assert result.returncode == 0, result.stderr
    assert {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*.bin")} == files
    assert len(jobs(url, "v13")) == 8


def test_glacier_job_list_is_not_asked_again_for_every_finished_download(inprocess: Emulator, tmp_path: Path):
    """Each listing is O(jobs) requests: once per download made the listing the export's pace."""
    mount = Mount(tmp_path / "m", inprocess.url, "--cache-size", "1M")
    try:
        fill(mount, "lj", sample(24))
        dest = tmp_path / "out"
        first = export(mount, "lj", dest, "--yes", "--concurrency", "2", "--poll-interval", "0")
        assert first.returncode == 0, first.stderr
        # The plan, the first round (starting every job), the round that finds them done.
        assert inprocess.calls["ListJobs"] <= 3
        assert inprocess.calls["InitiateJob"] == 24
        before = inprocess.calls["ListJobs"]
        again = export(mount, "lj", tmp_path / "again", "--yes", "--concurrency", "2", "--poll-interval", "0")
        assert again.returncode == 0, again.stderr
        assert "24 reused" in again.stdout
        assert inprocess.calls["ListJobs"] - before == 1  # the plan's listing serves the first round
    finally:
        mount.unmount()
    assert sorted(p.name for p in (tmp_path / "again").rglob("*.bin")) == sorted(p.name for p in dest.rglob("*.bin"))


def test_status_shows_a_running_export_in_text_and_json(mount: Mount, url: str, tmp_path: Path):
    fill(mount, "st", sample(4))
    control.configure(url, job_delay=3600.0)
    command = [*GLACIERFS, "export", str(mount.path("st")), str(tmp_path / "out"), "--yes", "--poll-interval", "0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = [*GLACIERFS, "status", str(mount.mountpoint)]

    def exports() -> list[dict]:
        answer = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(answer.stdout)["mounts"][str(mount.mountpoint)]["exports"]

    try:
        wait_for(lambda: [e for e in exports() if e["jobs_waiting"] == 4], timeout=30, what="the export in status")
        [running] = exports()
        assert running["pid"] == process.pid and running["source"] == "st"
        assert running["dest"] == str(tmp_path / "out")
        assert (running["files"], running["files_done"], running["bytes"]) == (4, 0, sum(3000 + i for i in range(4)))
        assert (running["downloading"], running["failed"], running["eta"]) == (0, 0, None)
        text = subprocess.run(status, capture_output=True, text=True, timeout=30).stdout
        assert f"export of st to {tmp_path / 'out'} (pid {process.pid})" in text
        assert "0/4 files" in text and "jobs waiting 4" in text
    finally:
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    assert exports() == []


def test_the_mounts_cost_guard_counts_the_exports_jobs_once(url: str, tmp_path: Path):
    mount = Mount(tmp_path / "m", url, "--cache-size", "1M", "--poll-interval", "0.2", "--max-retrieval-jobs", "4")
    try:
        files = {f"f{i}.bin": os.urandom(2000 + i) for i in range(3)}
        fill(mount, "cg", files)
        assert read_when_ready(mount.path("cg", "f0.bin")) == files["f0.bin"]  # the mount's own job
        result = export(mount, "cg", tmp_path / "out", "--yes")
        assert result.returncode == 0, result.stderr
        assert "2 new job(s), 1 reused" in result.stdout
        assert len(jobs(url, "cg")) == 3
        answer = subprocess.run(
            [*GLACIERFS, "status", "--json", str(mount.mountpoint)], capture_output=True, text=True, timeout=30
        )
        budget = json.loads(answer.stdout)["mounts"][str(mount.mountpoint)]["budget"]
        assert budget["jobs_left"] == 1  # 4 - (the mount's job + the export's two); the reused one once
        mount.path("cg", "g.bin").write_bytes(b"g" * 1000)
        mount.path("cg", "h.bin").write_bytes(b"h" * 1000)
        assert read_when_ready(mount.path("cg", "g.bin")) == b"g" * 1000
        with pytest.raises(OSError) as refused:
            mount.path("cg", "h.bin").read_bytes()
        assert refused.value.errno == errno.EDQUOT
        assert len(jobs(url, "cg")) == 4
    finally:
        mount.unmount()


def test_a_large_archive_comes_in_aligned_ranged_jobs_verified_then_combined(mount: Mount, url: str, tmp_path: Path):
    files = {"big.bin": os.urandom(5 * MiB + 512 * 1024), "small.bin": os.urandom(2 * MiB)}
    fill(mount, "rg", files)
    dest = tmp_path / "out"
    ranged = ["--ranged-threshold", "3M", "--range-size", "1M", "--chunk-size", "1M"]
    result = export(mount, "rg", dest, "--yes", *ranged)
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
        assert (dest / rel).stat().st_mtime_ns == (MTIME + len(data) % 1000) * 10**9
    listed = jobs(url, "rg")
    spans = sorted(job["RetrievalByteRange"] for job in listed if job["ArchiveSizeInBytes"] == len(files["big.bin"]))
    size = len(files["big.bin"])
    assert spans == sorted(f"{first}-{min(first + MiB, size) - 1}" for first in range(0, size, MiB))  # 6 ranges
    assert len(listed) == 7  # and one whole-archive job for the small file
    assert "7 new job(s)" in result.stdout
    assert not list(dest.glob(".*"))  # no temporary file left

    # To S3, reusing the same jobs: the ranges' parts land concurrently, each at its number.
    s3 = s3_client(url)
    s3.create_bucket(Bucket="ranged")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": url}
    command = [*GLACIERFS, "export", str(mount.path("rg")), "s3://ranged/x", "--yes", "--poll-interval", "0.1"]
    big = {"big.bin": os.urandom(20 * MiB + 5)}
    fill_more(mount, "rg", big)
    to_s3 = ["--ranged-threshold", "10M", "--range-size", "8M", "--chunk-size", "8M"]
    result = subprocess.run([*command, *to_s3], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert s3.get_object(Bucket="ranged", Key="x/big.bin")["Body"].read() == big["big.bin"]
    assert s3.get_object(Bucket="ranged", Key="x/small.bin")["Body"].read() == files["small.bin"]
    assert s3.list_multipart_uploads(Bucket="ranged").get("Uploads", []) == []
    assert len(jobs(url, "rg")) == 7 + 3  # the new big.bin: three ranges of 8, 8 and 4 MiB


def test_a_ranged_archive_resumes_from_its_verified_ranges(inprocess: Emulator, tmp_path: Path):
    mount = Mount(tmp_path / "m", inprocess.url, "--cache-size", "1M")
    try:
        data = os.urandom(5 * MiB + 100)
        fill(mount, "rr", {"big.bin": data})
        dest = tmp_path / "out"
        ranged = ["--ranged-threshold", "3M", "--range-size", "1M", "--chunk-size", "1M", "--concurrency", "1"]
        inprocess.settings.corrupt_outputs = 2  # the first range's one chunk, and its second try
        first = export(mount, "rr", dest, "--yes", *ranged)
        assert first.returncode == 1 and "failed: big.bin" in first.stderr, first.stderr
        assert not (dest / "big.bin").exists()
        assert inprocess.calls["InitiateJob"] == 6
        fetched = inprocess.calls["GetJobOutput"]
        again = export(mount, "rr", dest, "--yes", *ranged)
        assert again.returncode == 0, again.stderr
        assert (dest / "big.bin").read_bytes() == data
        assert inprocess.calls["InitiateJob"] == 6  # every range's job reused
        # The range that failed, and the last (which commits); the other four were checked on disk.
        assert inprocess.calls["GetJobOutput"] - fetched == 2
        assert again.stderr.count("verified by an earlier run, still there") == 4
    finally:
        mount.unmount()


def test_retrieve_is_paced_counting_the_mounts_own_jobs(mount: Mount, url: str, tmp_path: Path):
    files = {f"f{i}.bin": os.urandom(3000 + i) for i in range(3)}
    fill(mount, "pr", files)
    assert read_when_ready(mount.path("pr", "f0.bin")) == files["f0.bin"]  # a job of the mount's, this hour
    log = tmp_path / "retrieve.log"
    command = [*GLACIERFS, "retrieve", "--yes", "--max-jobs-per-hour", "2", str(mount.path("pr"))]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "paced: the next job in" in log.read_text(), timeout=30, what="retrieve paced")
        time.sleep(1)
        assert process.poll() is None  # waiting for the hour's window, not failing
        assert len(jobs(url, "pr")) == 2  # the mount's, and one of the two asked for
        assert "requested 1/2" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
