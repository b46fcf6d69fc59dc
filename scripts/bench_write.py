#!/usr/bin/env python3
"""Write throughput and memory of the mount, measured side by side in one run.

1. Throughput: `cp` of a file (1 GiB by default) into the mount, against plain
   boto3 uploading the same file in parts of the same size with the same
   concurrency to the same emulator. Rounds alternate; each round's ratio is
   taken, and their median kept (a burst of load from elsewhere then spoils one
   round, not one side); the ratio of the two medians is printed beside it.
   Target: mount >= 0.9 x direct.
2. Memory: a fresh mount writes a file of 20 parts; its peak RSS above its RSS
   when idle is set against the bound part_size x (concurrency + 2) plus a
   fixed overhead (upload threads, connection pool) of FIXED_OVERHEAD_MIB.
3. Many small files over a slow network (--write-back): the emulator answers
   every request after --latency-ms (100); `cp -r` of --small-files files of
   ~10 KiB into a --write-back mount, timed until `glacierfs umount` returns
   (every file stored), against plain boto3 uploading the same files with
   UploadArchive on 16 threads. Target: mount >= 0.8 x direct.
4. The same 1 GiB file through a --write-back mount that stays up for all its
   rounds, as the mount in 1 does, timed until `sync FILE` returns (the file is
   stored), against the same boto3 multipart. Target: >= 0.9 x direct. Then
   through a fresh --write-back mount per round, timed until `glacierfs umount`
   returns, which also counts the mount's first use (part buffers, connections)
   and its stop (the manifest); and the same rounds until `sync FILE` returned.
5. A mixed tree over the slow network: --mixed-small files of ~10 KiB and 4 files
   of --mixed-large-mib, through a --write-back mount until `glacierfs umount`
   returns, against boto3 (16 threads of UploadArchive, then each large file
   multipart). No target; the mount's peak RSS is printed against the bound.

The emulator runs in its own process, so neither side pays for it in its RSS.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
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


def direct_small_uploads(url: str, vault: str, files: list[Path], threads: int = 16) -> None:
    client = boto3.client(
        "glacier", endpoint_url=url, region_name="us-east-1", config=Config(max_pool_connections=threads)
    )

    def send(path: Path) -> None:
        client.upload_archive(vaultName=vault, body=path.read_bytes(), archiveDescription=path.name)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, files))


def write_back_copy(
    work: Path,
    url: str,
    round_: int,
    *sources: Path,
    extra: tuple[str, ...] = (),
    grown: list[int] | None = None,
    synced: list[float] | None = None,
) -> float:
    """A fresh --write-back mount: seconds from the start of `cp -r` of the
    sources until `glacierfs umount` returns, every file stored. The daemon's
    peak RSS above idle (KiB) goes to ``grown``. With ``synced``, `sync` of the
    copied files runs first (it returns once Glacier stored them), and the
    seconds until then go there."""
    mount = Mount(work / f"write-back-{round_}", url, "--write-back", *extra)
    try:
        idle = rss_kib(mount.pid, "VmRSS")
        start = time.perf_counter()
        cp_into(mount, "-r", *map(str, sources), str(mount.path("bench")))
        if synced is not None:
            subprocess.run(["sync", *(str(mount.path("bench", source.name)) for source in sources)], check=True)
            synced.append(time.perf_counter() - start)
        peak = rss_kib(mount.pid, "VmHWM")
        unmounting = subprocess.Popen([sys.executable, "-m", "glacierfs", "umount", "-q", str(mount.mountpoint)])
        while unmounting.poll() is None:  # the uploads run now: follow the peak until the daemon ends
            try:
                peak = max(peak, rss_kib(mount.pid, "VmHWM"))
            except (OSError, RuntimeError):
                break
            time.sleep(0.05)
        if unmounting.wait():
            print(mount.log_text()[-5000:], file=sys.stderr)
            raise SystemExit("glacierfs umount failed")
        elapsed = time.perf_counter() - start
        mount.process.wait(timeout=60)
        if grown is not None:
            grown.append(peak - idle)
        return elapsed
    finally:
        mount.unmount()


def tree_of(directory: Path, count: int, kib: int) -> list[Path]:
    directory.mkdir()
    files = [directory / f"f{i:05}" for i in range(count)]
    for index, path in enumerate(files):
        path.write_bytes(os.urandom(kib * 1024 + index % 512))
    return files


def paired(mount_times: list[float], direct_times: list[float]) -> float:
    """The median of each round's own speed ratio (mount / direct): a burst of
    load from elsewhere hits one round of both sides, not one side's median."""
    return statistics.median(direct / mount for mount, direct in zip(mount_times, direct_times, strict=True))


def alternate(
    rounds: int,
    through_mount: Callable[[int], object],
    direct: Callable[[], object],
    between: Callable[[], object] = lambda: None,
) -> tuple[list[float], list[float]]:
    """Seconds of each side, round after round, one after the other. A side that
    returns a float has timed itself (what it sets up first is not counted);
    ``between`` runs, untimed, after each."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds):
        for action, spent in ((functools.partial(through_mount, round_), times[0]), (direct, times[1])):
            start = time.perf_counter()
            timed = action()
            spent.append(timed if isinstance(timed, float) else time.perf_counter() - start)
            between()
    return times


def empty_vault(url: str, vault: str) -> None:
    """Delete what the last round stored. The emulator keeps archives in files
    on this machine, so each 1 GiB round would otherwise add a GiB to the
    page cache, and later rounds of either side would pay for the kernel's
    reclaim of memory that the real service does not take from us."""
    client = boto3.client("glacier", endpoint_url=url, region_name="us-east-1")
    job = client.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    listed = json.loads(client.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read())["ArchiveList"]
    for archive in listed:
        client.delete_archive(vaultName=vault, archiveId=archive["ArchiveId"])


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


def median_text(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}s" for t in times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-part-mib", type=int, default=16)
    parser.add_argument("--small-files", type=int, default=300)
    parser.add_argument("--small-kib", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--mixed-small", type=int, default=1000)
    parser.add_argument("--mixed-large-mib", type=int, default=256)
    parser.add_argument(
        "--only", default="throughput,memory,small,mixed", help="comma-separated sections to run (default: all)"
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    part_size = args.part_mib * MiB
    sizing = ("--part-size", str(part_size), "--concurrency", str(args.concurrency))
    verdicts: list[bool] = []

    with scratch() as directory:
        work = Path(directory)
        if sections & {"throughput", "memory"}:
            emulator = ServedEmulator(data_dir=work / "emulator")
            try:
                boto3.client("glacier", endpoint_url=emulator.url, region_name="us-east-1").create_vault(
                    vaultName="bench"
                )
                if "throughput" in sections:
                    verdicts.append(throughput(args, work, emulator.url, part_size, sizing))
                if "memory" in sections:
                    verdicts.append(memory(args, work, emulator.url))
            finally:
                emulator.stop()
        if sections & {"small", "mixed"}:
            slow = ServedEmulator("--latency-ms", str(args.latency_ms), data_dir=work / "slow-emulator")
            try:
                boto3.client("glacier", endpoint_url=slow.url, region_name="us-east-1").create_vault(vaultName="bench")
                if "small" in sections:
                    verdicts.append(small_files(args, work, slow.url, sizing))
                if "mixed" in sections:
                    mixed_tree(args, work, slow.url, sizing)
            finally:
                slow.stop()
    return 0 if all(verdicts) else 1


def throughput(args: argparse.Namespace, work: Path, url: str, part_size: int, sizing: tuple[str, ...]) -> bool:
    """Each mode in a mount that stays up for all its rounds, as a mount in use
    does (its part buffers and connections are warm after the first round),
    timed until the file is stored: `cp` returns then without --write-back,
    `sync FILE` with it. Then --write-back as a fresh mount per round, timed
    until `glacierfs umount` returns: its first use and its stop counted too."""
    source = work / "source.bin"
    write_random_file(source, args.size_mib * MiB)
    between = functools.partial(empty_vault, url, "bench")

    def direct() -> None:
        direct_upload(url, "bench", source, part_size, args.concurrency)

    def in_one_mount(*mode: str) -> tuple[list[float], list[float]]:
        mount = Mount(work / f"throughput{''.join(mode)}", url, *mode, *sizing)
        try:

            def copy(round_: int) -> None:
                copied = mount.path("bench", f"copy-{round_}")
                cp_into(mount, str(source), str(copied))
                if mode:
                    subprocess.run(["sync", str(copied)], check=True)  # returns once Glacier stored it

            return alternate(args.rounds, copy, direct, between)
        finally:
            mount.unmount()

    mount_times, direct_times = in_one_mount()
    back_times, back_direct = in_one_mount("--write-back")
    synced: list[float] = []
    fresh_times, fresh_direct = alternate(
        args.rounds,
        lambda round_: write_back_copy(work / "big", url, round_, source, extra=sizing, synced=synced),
        direct,
        between,
    )
    source.unlink()
    size_mb = args.size_mib * MiB / 1e6

    def rate(times: list[float]) -> float:
        return size_mb / statistics.median(times)

    print(
        f"write: {args.size_mib} MiB file, part {args.part_mib} MiB, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds, median, {os.cpu_count()} cores"
    )
    verdict = True
    for label, times, beside, target in (
        ("cp into the mount", mount_times, direct_times, True),
        ("--write-back, cp + sync FILE", back_times, back_direct, True),
        ("fresh --write-back mount, cp + umount", fresh_times, fresh_direct, False),
        ("  the same, until sync FILE", synced, fresh_direct, False),
    ):
        ratio = paired(times, beside)
        print(f"  {label:<38} {rate(times):6.0f} MB/s  ({median_text(times)})")
        if times is not synced:  # beside the rounds above it
            print(f"  {'plain boto3 multipart':<38} {rate(beside):6.0f} MB/s  ({median_text(beside)})")
        print(
            f"    mount / direct = {ratio:.2f} per round, median  "
            f"({'target >= 0.90; ' if target else ''}ratio of the medians {rate(times) / rate(beside):.2f})"
        )
        verdict = verdict and (ratio >= 0.9 or not target)
    return verdict


def memory(args: argparse.Namespace, work: Path, url: str) -> bool:
    memory_part = args.memory_part_mib * MiB
    memory_source = work / "twenty-parts.bin"
    write_random_file(memory_source, 20 * memory_part)
    mount = Mount(work / "memory", url, "--part-size", str(memory_part), "--concurrency", str(args.concurrency))
    try:
        idle = rss_kib(mount.pid, "VmRSS")
        subprocess.run(["cp", str(memory_source), str(mount.path("bench", "twenty-parts"))], check=True)
        peak = rss_kib(mount.pid, "VmHWM")
    finally:
        mount.unmount()
    bound_kib = memory_part * (args.concurrency + 2) // 1024 + FIXED_OVERHEAD_MIB * 1024
    grown_kib = peak - idle
    print(f"memory: 20 parts of {args.memory_part_mib} MiB, concurrency {args.concurrency}")
    print(
        f"  mount RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB: grew {grown_kib / 1024:.0f} MiB "
        f"against the bound part x (concurrency + 2) + {FIXED_OVERHEAD_MIB} MiB = {bound_kib / 1024:.0f} MiB"
    )
    print(f"growth / bound = {grown_kib / bound_kib:.2f}  (target <= 1.00)")
    return grown_kib <= bound_kib


def small_files(args: argparse.Namespace, work: Path, url: str, sizing: tuple[str, ...]) -> bool:
    tree = work / "small"
    files = tree_of(tree, args.small_files, args.small_kib)
    mount_times, direct_times = alternate(
        args.rounds,
        lambda round_: write_back_copy(work / "small-runs", url, round_, tree, extra=sizing),
        lambda: direct_small_uploads(url, "bench", files, threads=16),
    )
    mount_time, direct_time = statistics.median(mount_times), statistics.median(direct_times)
    print(
        f"small files: {args.small_files} of ~{args.small_kib} KiB, service latency {args.latency_ms} ms, "
        f"{args.rounds} alternating rounds, median"
    )
    print(f"  --write-back: cp -r, then glacierfs umount  {mount_time:6.2f} s  ({median_text(mount_times)})")
    print(f"  plain boto3 UploadArchive, 16 threads      {direct_time:6.2f} s  ({median_text(direct_times)})")
    ratio = paired(mount_times, direct_times)
    print(
        f"small files: mount / direct speed = {ratio:.2f} per round, median  (target >= 0.80; "
        f"ratio of the medians {direct_time / mount_time:.2f})"
    )
    return ratio >= 0.8


def mixed_tree(args: argparse.Namespace, work: Path, url: str, sizing: tuple[str, ...]) -> None:
    tree = work / "mixed"
    small = tree_of(tree, args.mixed_small, args.small_kib)
    large = [tree / f"large-{index}.bin" for index in range(4)]
    for path in large:
        write_random_file(path, args.mixed_large_mib * MiB)
    part_size = args.part_mib * MiB

    def direct() -> None:
        direct_small_uploads(url, "bench", small, threads=16)
        for path in large:
            direct_upload(url, "bench", path, part_size, args.concurrency)

    grown: list[int] = []
    mount_times, direct_times = alternate(
        1, lambda round_: write_back_copy(work / "mixed-runs", url, round_, tree, extra=sizing, grown=grown), direct
    )
    total_mb = (sum(path.stat().st_size for path in small) + 4 * args.mixed_large_mib * MiB) / 1e6
    bound_mib = args.part_mib * (args.concurrency + 2) + FIXED_OVERHEAD_MIB
    print(
        f"mixed tree: {args.mixed_small} files of ~{args.small_kib} KiB and 4 of {args.mixed_large_mib} MiB "
        f"({total_mb:.0f} MB), service latency {args.latency_ms} ms, one round"
    )
    print(f"  --write-back: cp -r, then glacierfs umount  {mount_times[0]:6.2f} s")
    print(f"  plain boto3 (16 threads, then multipart)   {direct_times[0]:6.2f} s")
    print(f"mixed: mount / direct speed = {direct_times[0] / mount_times[0]:.2f}  (no target)")
    print(
        f"  mount RSS grew {grown[0] / 1024:.0f} MiB against the bound part x (concurrency + 2) "
        f"+ {FIXED_OVERHEAD_MIB} MiB = {bound_mib} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
