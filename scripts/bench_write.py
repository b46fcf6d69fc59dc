#!/usr/bin/env python3
"""Write throughput and memory of the mount, measured side by side in one run.

1. Throughput: `cp` of a file (1 GiB by default) into the mount, against plain
   boto3 uploading the same file in parts of the same size with the same
   concurrency to the same emulator. Rounds alternate, the median is kept.
   Target: mount >= 0.9 x direct.
2. Memory: a fresh mount writes a file of 20 parts; its peak RSS above its RSS
   when idle is set against the bound part_size x (concurrency + 2) plus a
   fixed overhead (upload threads, connection pool) of FIXED_OVERHEAD_MIB.
3. Many small files: `cp -r` of a tree of small files into the mount, against
   plain boto3 uploading each file with UploadArchive, one after the other.
   No target: it shows per-file costs (a regression once made this 10x slower).

The emulator runs in its own process, so neither side pays for it in its RSS.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from benchlib import MiB, scratch, write_random_file
from botocore.config import Config

from glacierfs.testing import Mount, ServedEmulator

FIXED_OVERHEAD_MIB = 24


def combine(hex_hashes: list[str]) -> str:
    level = [bytes.fromhex(h) for h in hex_hashes]
    while len(level) > 1:
        level = [
            hashlib.sha256(level[i] + level[i + 1]).digest() if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    return level[0].hex()


def direct_upload(url: str, vault: str, source: Path, part_size: int, concurrency: int) -> None:
    """What a user would write with boto3: parts read from the file, botocore hashing them."""
    client = boto3.client(
        "glacier", endpoint_url=url, region_name="us-east-1", config=Config(max_pool_connections=concurrency * 2)
    )
    upload_id = client.initiate_multipart_upload(vaultName=vault, partSize=str(part_size))["uploadId"]
    size = source.stat().st_size

    def send(offset: int) -> str:
        with open(source, "rb") as handle:
            handle.seek(offset)
            body = handle.read(part_size)
        response = client.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            body=body,
            range=f"bytes {offset}-{offset + len(body) - 1}/*",
        )
        return response["checksum"]

    with ThreadPoolExecutor(concurrency) as pool:
        hashes = list(pool.map(send, range(0, size, part_size)))
    client.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(size), checksum=combine(hashes)
    )


def direct_small_uploads(url: str, vault: str, files: list[Path]) -> None:
    client = boto3.client("glacier", endpoint_url=url, region_name="us-east-1")
    for path in files:
        client.upload_archive(vaultName=vault, body=path.read_bytes(), archiveDescription=path.name)


def alternate(
    rounds: int, through_mount: Callable[[int], None], direct: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """Seconds of each side, round after round, one after the other."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds):
        for action, spent in ((functools.partial(through_mount, round_), times[0]), (direct, times[1])):
            start = time.perf_counter()
            action()
            spent.append(time.perf_counter() - start)
    return times


def cp_into(mount: Mount, *arguments: str) -> None:
    copied = subprocess.run(["cp", *arguments])
    if copied.returncode:
        print(mount.log_text()[-5000:], file=sys.stderr)
        raise SystemExit(f"cp {' '.join(arguments)} failed")


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-part-mib", type=int, default=16)
    parser.add_argument("--small-files", type=int, default=300)
    parser.add_argument("--small-kib", type=int, default=10)
    args = parser.parse_args()
    part_size = args.part_mib * MiB

    with scratch() as directory:
        work = Path(directory)
        source = work / "source.bin"
        write_random_file(source, args.size_mib * MiB)
        emulator = ServedEmulator(data_dir=work / "emulator")
        try:
            boto3.client("glacier", endpoint_url=emulator.url, region_name="us-east-1").create_vault(vaultName="bench")
            mount = Mount(
                work / "throughput", emulator.url, "--part-size", str(part_size), "--concurrency", str(args.concurrency)
            )
            try:
                mount_times, direct_times = alternate(
                    args.rounds,
                    lambda round_: cp_into(mount, str(source), str(mount.path("bench", f"copy-{round_}"))),
                    lambda: direct_upload(emulator.url, "bench", source, part_size, args.concurrency),
                )
            finally:
                mount.unmount()

            memory_part = args.memory_part_mib * MiB
            memory_source = work / "twenty-parts.bin"
            write_random_file(memory_source, 20 * memory_part)
            mount = Mount(
                work / "memory", emulator.url, "--part-size", str(memory_part), "--concurrency", str(args.concurrency)
            )
            try:
                idle = rss_kib(mount.pid, "VmRSS")
                subprocess.run(["cp", str(memory_source), str(mount.path("bench", "twenty-parts"))], check=True)
                peak = rss_kib(mount.pid, "VmHWM")
            finally:
                mount.unmount()

            tree = work / "small"
            tree.mkdir()
            small_files = [tree / f"f{i}" for i in range(args.small_files)]
            for path in small_files:
                path.write_bytes(os.urandom(args.small_kib * 1024))
            mount = Mount(
                work / "small-files",
                emulator.url,
                "--part-size",
                str(part_size),
                "--concurrency",
                str(args.concurrency),
            )
            try:
                small_mount, small_direct = alternate(
                    args.rounds,
                    lambda round_: cp_into(mount, "-r", str(tree), str(mount.path("bench", f"tree-{round_}"))),
                    lambda: direct_small_uploads(emulator.url, "bench", small_files),
                )
            finally:
                mount.unmount()
        finally:
            emulator.stop()

    size_mb = args.size_mib * MiB / 1e6
    mount_rate = size_mb / statistics.median(mount_times)
    direct_rate = size_mb / statistics.median(direct_times)
    ratio = mount_rate / direct_rate
    bound_kib = memory_part * (args.concurrency + 2) // 1024 + FIXED_OVERHEAD_MIB * 1024
    grown_kib = peak - idle
    print(
        f"write: {args.size_mib} MiB file, part {args.part_mib} MiB, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds, median, {os.cpu_count()} cores"
    )
    print(f"  cp into the mount          {mount_rate:8.0f} MB/s  ({', '.join(f'{t:.2f}s' for t in mount_times)})")
    print(f"  plain boto3 multipart      {direct_rate:8.0f} MB/s  ({', '.join(f'{t:.2f}s' for t in direct_times)})")
    print(f"mount / direct = {ratio:.2f}  (target >= 0.90)")
    print(f"memory: 20 parts of {args.memory_part_mib} MiB, concurrency {args.concurrency}")
    print(
        f"  mount RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB: grew {grown_kib / 1024:.0f} MiB "
        f"against the bound part x (concurrency + 2) + {FIXED_OVERHEAD_MIB} MiB = {bound_kib / 1024:.0f} MiB"
    )
    print(f"growth / bound = {grown_kib / bound_kib:.2f}  (target <= 1.00)")
    per_file = [statistics.median(times) / args.small_files * 1000 for times in (small_mount, small_direct)]
    print(f"small files: {args.small_files} of {args.small_kib} KiB, {args.rounds} alternating rounds, median")
    print(f"  cp -r into the mount       {per_file[0]:8.1f} ms per file")
    print(f"  plain boto3 UploadArchive  {per_file[1]:8.1f} ms per file")
    print(f"small files: mount / direct time = {per_file[0] / per_file[1]:.2f}  (no target)")
    return 0 if ratio >= 0.9 and grown_kib <= bound_kib else 1


if __name__ == "__main__":
    sys.exit(main())
