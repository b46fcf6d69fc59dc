#!/usr/bin/env python3
"""`glacierfs export` against plain boto3, side by side in one run.

A vault of COUNT archives (1,000 by default, 1 KiB-10 MiB each, log-uniform,
about TOTAL bytes, 1 GiB by default) is copied into a mount of the emulator
(its own process, job delay 0). Then:

1. export to a local directory, straight through (starting every job);
2. plain boto3 fetching the same job outputs with the same concurrency and
   chunk size, writing files (no verification, no names): the target is
   export >= 0.8 x direct;
3. export to a fresh directory reusing those jobs (downloads only);
4. the export's peak RSS (bounded: concurrency x chunk size plus the interpreter);
5. three days later (the emulator's clock; every output expired): an export
   killed with SIGKILL halfway and rerun; Glacier must list exactly COUNT jobs;
6. the same export to S3 on the emulator's endpoint (moto's S3), reusing jobs.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from benchlib import MiB, scratch
from botocore.config import Config

from glacierfs.emulator import control
from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, wait_for

CONCURRENCY = 4
CHUNK = 16 * MiB


def sizes(count: int, total: int, seed: int = 14) -> list[int]:
    rng = random.Random(seed)
    raw = [2 ** rng.uniform(10, 23.3) for _ in range(count)]  # 1 KiB .. 10 MiB
    scale = total / sum(raw)
    return [max(1024, min(10 * MiB, int(size * scale))) for size in raw]


def export(mnt: Path, dest: str, env: dict[str, str], *extra: str) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one `glacierfs export` run."""
    command = [*GLACIERFS, "export", str(mnt), dest, "--yes", "--poll-interval", "0.05"]
    command += ["--concurrency", str(CONCURRENCY), "--chunk-size", str(CHUNK), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"export failed ({result.returncode}): {result.stdout}\n{result.stderr[-3000:]}")
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def direct(url: str, vault: str, out: Path) -> float:
    """Plain boto3: every finished retrieval job's output, in CHUNK ranges, CONCURRENCY at once."""
    client = boto3.client(
        "glacier", endpoint_url=url, region_name="us-east-1", config=Config(max_pool_connections=CONCURRENCY * 2)
    )
    pages = client.get_paginator("list_jobs").paginate(vaultName=vault)
    jobs = [job for page in pages for job in page["JobList"] if job["Action"] == "ArchiveRetrieval"]
    out.mkdir()

    def fetch(job: dict) -> None:
        size = job["ArchiveSizeInBytes"]
        with open(out / job["JobId"][:40], "wb") as handle:
            for start in range(0, size, CHUNK):
                end = min(start + CHUNK, size) - 1
                body = client.get_job_output(vaultName=vault, jobId=job["JobId"], range=f"bytes={start}-{end}")
                handle.write(body["body"].read())

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(fetch, jobs))
    return time.perf_counter() - started


def job_count(url: str, vault: str) -> int:
    client = boto3.client("glacier", endpoint_url=url, region_name="us-east-1")
    listed = client.get_paginator("list_jobs").paginate(vaultName=vault)
    return sum(1 for page in listed for job in page["JobList"] if job["Action"] == "ArchiveRetrieval")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--total-mib", type=int, default=1024)
    args = parser.parse_args()
    wanted = sizes(args.count, args.total_mib * MiB)
    total = sum(wanted)
    emulator = ServedEmulator()
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": emulator.url}
    with scratch() as tmp:
        work = Path(tmp)
        mount = Mount(work / "m", emulator.url, "--cache-size", "64M")
        try:
            source = work / "src"
            for index, size in enumerate(wanted):
                path = source / f"d{index % 20}" / f"f{index}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(size))
            mount.path("bench").mkdir()
            subprocess.run(["cp", "-r", f"{source}/.", str(mount.path("bench"))], check=True)
            vault = mount.path("bench")
            print(f"export: {args.count} archives, {total / MiB:.0f} MiB, concurrency {CONCURRENCY}, chunk 16 MiB")

            first, rss = export(vault, str(work / "a"), env)
            jobs = job_count(emulator.url, "bench")
            plain = direct(emulator.url, "bench", work / "direct")
            reuse, rss2 = export(vault, str(work / "b"), env)
            print(f"  export, starting every job     {total / first / 1e6:7.1f} MB/s  ({first:.1f} s, {jobs} jobs)")
            print(f"  plain boto3, same job outputs  {total / plain / 1e6:7.1f} MB/s  ({plain:.1f} s)")
            print(f"  export, reusing the jobs       {total / reuse / 1e6:7.1f} MB/s  ({reuse:.1f} s)")
            print(f"export / direct = {plain / first:.2f}  (target >= 0.80); reusing jobs: {plain / reuse:.2f}")
            print(f"peak RSS of an export: {max(rss, rss2) / 1024:.0f} MiB")

            control.configure(emulator.url, clock_offset=3 * 86400.0)  # every output has expired
            command = [*GLACIERFS, "export", str(vault), str(work / "c"), "--yes", "--poll-interval", "0.05"]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            wait_for(lambda: sum(1 for _ in (work / "c").rglob("*.bin")) >= args.count // 2, timeout=600)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            halfway = sum(1 for _ in (work / "c").rglob("*.bin"))
            export(vault, str(work / "c"), env)
            after = job_count(emulator.url, "bench")
            print(f"kill -9 at {halfway}/{args.count} files, then a rerun: {after} jobs (target: exactly {args.count})")

            boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1").create_bucket(Bucket="bench")
            to_s3, _ = export(vault, "s3://bench/export", env)
            print(f"  export to S3, reusing the jobs {total / to_s3 / 1e6:7.1f} MB/s  ({to_s3:.1f} s)")
        finally:
            mount.unmount()
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
