#!/usr/bin/env python3
"""`glacierfs export` against plain boto3, side by side in one run.

A vault of COUNT archives (1,000 by default, 1 KiB-10 MiB each, log-uniform,
about TOTAL bytes, 1 GiB by default) is copied into a mount of the emulator
(its own process, job delay 0). Then, in ROUNDS rounds (the best time of
each is reported, as the machine is shared):

1. export to a local directory, straight through (starting every job), and
   plain boto3 doing the same work: one job per archive started 8 at a time,
   the job list read, every output fetched in CHUNK ranges CONCURRENCY archives
   at once, each range's and each archive's tree hash checked, the file written
   and given its mtime (no names, no state, no fsync). A baseline that skips
   verification or job starts measures a different job; this one does not;
2. both again, each reusing its jobs (downloads only);
3. the target: export >= 0.8 x plain boto3, both ways; and the export's peak
   RSS (bounded: concurrency x chunk size plus the interpreter);
4. later (the emulator's clock; every output expired): an export killed with
   SIGKILL halfway and rerun; Glacier must list exactly COUNT jobs;
5. the same export to S3 on the emulator's endpoint (moto's S3), reusing jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def combine(level: list[bytes]) -> bytes:
    """Tree-hash nodes of one level (aligned ranges, in order) combined, pair by pair, into their root."""
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [hashlib.sha256(b"".join(pair)).digest() if len(pair) == 2 else pair[0] for pair in pairs]
    return level[0]


def tree_hash(data: bytes) -> bytes:
    """Glacier's tree hash, written out plainly: SHA-256 of 1 MiB leaves, then of pairs."""
    return combine([hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, len(data), MiB)])


def plain(
    url: str, vault: str, archives: list[dict], out: Path, jobs: dict[str, str] | None = None
) -> tuple[float, dict[str, str]]:
    """The export's work done with plain boto3 and nothing else: start one job per
    archive (8 at once, as the export does) unless ``jobs`` gives them, find them
    finished in Glacier's list, fetch each output in CHUNK ranges (CONCURRENCY
    archives at once), check every range's tree hash against Glacier's header
    and the whole against the archive's, write the file and give it its mtime.
    No names, no state, no fsync: seconds, and archive id -> job id."""
    client = boto3.client(
        "glacier", endpoint_url=url, region_name="us-east-1", config=Config(max_pool_connections=CONCURRENCY * 4)
    )
    out.mkdir()
    started = time.perf_counter()
    if jobs is None:
        with ThreadPoolExecutor(8) as starter:
            ids = starter.map(
                lambda archive: client.initiate_job(
                    vaultName=vault,
                    jobParameters={"Type": "archive-retrieval", "ArchiveId": archive["ArchiveId"], "Tier": "Bulk"},
                )["jobId"],
                archives,
            )
            jobs = {archive["ArchiveId"]: job_id for archive, job_id in zip(archives, ids, strict=True)}
    pages = client.get_paginator("list_jobs").paginate(vaultName=vault)
    listed = {job["JobId"]: job for page in pages for job in page["JobList"]}

    def fetch(archive: dict) -> None:
        job = listed[jobs[archive["ArchiveId"]]]
        assert job["Completed"]
        size, hashes = job["ArchiveSizeInBytes"], []
        path = out / job["JobId"][:40]
        with open(path, "wb") as handle:
            for start in range(0, size, CHUNK):
                end = min(start + CHUNK, size) - 1
                reply = client.get_job_output(vaultName=vault, jobId=job["JobId"], range=f"bytes={start}-{end}")
                body = reply["body"].read()
                hashes.append(tree_hash(body))
                assert len(body) == end - start + 1 and reply.get("checksum") in (None, hashes[-1].hex())
                handle.write(body)
        assert combine(hashes).hex() == archive["SHA256TreeHash"]
        os.utime(path, (1_600_000_000, 1_600_000_000))

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(fetch, archives))
    return time.perf_counter() - started, jobs


def listed_jobs(url: str, vault: str) -> list[dict]:
    """The retrieval jobs Glacier lists, by plain boto3."""
    client = boto3.client("glacier", endpoint_url=url, region_name="us-east-1")
    listed = client.get_paginator("list_jobs").paginate(vaultName=vault)
    return [job for page in listed for job in page["JobList"] if job["Action"] == "ArchiveRetrieval"]


def inventory(url: str, vault: str) -> list[dict]:
    """ArchiveId and SHA256TreeHash of every archive, from an inventory job (job delay 0)."""
    client = boto3.client("glacier", endpoint_url=url, region_name="us-east-1")
    job = client.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    return json.loads(client.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read())["ArchiveList"]


def job_count(url: str, vault: str) -> int:
    return len(listed_jobs(url, vault))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
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

            archives = inventory(emulator.url, "bench")
            # Rounds alternate who goes first; the best of each is reported (the machine is shared).
            times: dict[str, list[float]] = {"export": [], "plain": [], "export reusing": [], "plain reusing": []}
            rss = 0
            for round_ in range(args.rounds):
                # Every output from before has expired: both sides start every job again.
                control.configure(emulator.url, clock_offset=(round_ + 1) * 2 * 86400.0)
                # The export first: it would reuse plain boto3's jobs, which Glacier lists.
                seconds, peak = export(vault, str(work / f"a{round_}"), env)
                times["export"].append(seconds)
                rss = max(rss, peak)
                seconds, plain_jobs = plain(emulator.url, "bench", archives, work / f"p{round_}")
                times["plain"].append(seconds)
                for name in (
                    ("export reusing", "plain reusing") if round_ % 2 == 0 else ("plain reusing", "export reusing")
                ):
                    if name == "export reusing":
                        seconds, peak = export(vault, str(work / f"b{round_}"), env)
                        rss = max(rss, peak)
                    else:
                        seconds, _ = plain(emulator.url, "bench", archives, work / f"q{round_}", plain_jobs)
                    times[name].append(seconds)
            best = {name: min(values) for name, values in times.items()}
            for name, seconds in best.items():
                print(
                    f"  {name:<16} {total / seconds / 1e6:7.1f} MB/s  ({seconds:.1f} s; rounds: "
                    + ", ".join(f"{value:.1f}" for value in times[name])
                    + ")"
                )
            print(
                f"export / plain boto3 = {best['plain'] / best['export']:.2f} starting every job, "
                f"{best['plain reusing'] / best['export reusing']:.2f} reusing them  (target >= 0.80)"
            )
            print(f"peak RSS of an export: {rss / 1024:.0f} MiB")

            # Every output has expired.
            control.configure(emulator.url, clock_offset=(args.rounds + 1) * 2 * 86400.0)
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
