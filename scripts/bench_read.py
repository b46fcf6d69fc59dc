#!/usr/bin/env python3
"""Read throughput of a cached archive, measured side by side in one run.

1. First read: a cached archive (1 GiB by default) read through the mount
   against the same bytes read from the cache's own file, both with the page
   cache dropped first (needs root; otherwise both are read warm and the
   figure says so). Target: mount >= 0.5 x direct.
2. Second read: read through the mount again, against the same file read from
   the page cache. Target: mount >= 0.9 x page cache.
Where FUSE passthrough works (root, libfuse >= 3.17), the kernel reads the
cache's file itself; otherwise the daemon serves the first read and the FUSE
page cache the second. The run says which.
Rounds alternate and the median is kept, because this machine is noisy.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchlib import MiB, drop_page_cache, scratch, write_random_file

from glacierfs.testing import Mount, ServedEmulator, run, wait_for


def read_all(path: Path, block: int = MiB) -> float:
    """Seconds to read ``path`` start to end in ``block``-sized reads."""
    buffer = bytearray(block)
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        while os.readv(fd, [buffer]):
            pass
        return time.perf_counter() - start
    finally:
        os.close(fd)


def is_cached(path: Path) -> bool:
    """Open once (which starts or reuses the retrieval), then ask the state."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as error:
        if error.errno != errno.EAGAIN:
            raise
    return os.getxattr(path, "user.glacier.state") == b"cached"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib * MiB

    with scratch() as directory:
        work = Path(directory)
        source = work / "source.bin"
        write_random_file(source, size)
        emulator = ServedEmulator(data_dir=work / "emulator")
        mount = Mount(
            work,
            emulator.url,
            "--poll-interval",
            "0.5",
            "--cache-dir",
            str(work / "cache"),
            "--cache-size",
            f"{2 * args.size_mib + 64}M",
            "--ranged-threshold",
            f"{2 * args.size_mib}M",
            "--max-retrieval-bytes",
            f"{2 * args.size_mib}M",
        )
        try:
            mount.path("bench").mkdir()
            archive = mount.path("bench", "archive.bin")
            run("cp", source, archive)
            wait_for(lambda: is_cached(archive), timeout=600, what=f"{archive} to be cached")
            read_by = json.loads(os.getxattr(mount.mountpoint, "user.glacier.status"))["cache"]["read_by"]
            cache_file = max((p for p in (work / "cache").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
            assert cache_file.stat().st_size == size, cache_file
            cold = {"mount": [], "direct": []}
            warm = {"mount": [], "page cache": []}
            dropped = True
            for _ in range(args.rounds):
                dropped &= drop_page_cache()
                cold["mount"].append(read_all(archive))
                warm["mount"].append(read_all(archive))
                dropped &= drop_page_cache()
                cold["direct"].append(read_all(cache_file))
                warm["page cache"].append(read_all(cache_file))
        finally:
            mount.unmount()
            emulator.stop()

    def rate(times: list[float]) -> float:
        return size / 1e6 / statistics.median(times)

    first = rate(cold["mount"]) / rate(cold["direct"])
    second = rate(warm["mount"]) / rate(warm["page cache"])
    how = "page cache dropped before each first read" if dropped else "page cache NOT dropped (not root)"
    print(
        f"read: {args.size_mib} MiB cached archive, 1 MiB reads, {args.rounds} alternating rounds, median, "
        f"{os.cpu_count()} cores; {how}"
    )
    print(f"  cached archives are read by {read_by}")
    print(f"  first read through the mount     {rate(cold['mount']):8.0f} MB/s")
    print(f"  first read of the cache's file   {rate(cold['direct']):8.0f} MB/s")
    print(f"  second read through the mount    {rate(warm['mount']):8.0f} MB/s")
    print(f"  second read of the cache's file  {rate(warm['page cache']):8.0f} MB/s")
    print(f"first read:  mount / direct     = {first:.2f}  (target >= 0.50)")
    print(f"second read: mount / page cache = {second:.2f}  (target >= 0.90)")
    return 0 if first >= 0.5 and second >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
