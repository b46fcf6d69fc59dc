#!/usr/bin/env python3
"""Listing a large vault, measured side by side in one run.

1. Reconcile: a 100,000-archive inventory (the JSON Glacier sends, with
   FastGlacier descriptions in 1,000 directories) is parsed as a stream and
   reconciled into a fresh catalog, in a child process so its peak RSS is its own.
2. `ls -l` of that vault through the mount, against `ls -l` of a local
   directory of 100,000 files; first listing and second listing, alternating
   rounds, median. Target: the second (once the vault is listed) <= 2 x local.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3
from benchlib import drop_page_cache, scratch

from glacierfs import names
from glacierfs.testing import Mount, ServedEmulator


def write_inventory(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(
            '{"VaultARN":"arn:aws:glacier:us-east-1:123456789012:vaults/big",'
            '"InventoryDate":"2026-01-01T00:00:00Z","ArchiveList":['
        )
        for index in range(count):
            if index:
                out.write(",")
            item = {
                "ArchiveId": f"{index:0>12}" + "A" * 126,
                "ArchiveDescription": names.encode(f"dir{index % 1000:03d}/file{index:06d}.dat", 1_700_000_000 + index),
                "CreationDate": "2025-06-01T12:00:00.000Z",
                "Size": 1000 + index,
                "SHA256TreeHash": "0" * 64,
            }
            out.write(json.dumps(item, separators=(",", ":")))
        out.write("]}")


def reconcile(catalog_path: str, inventory: str, results: multiprocessing.Queue) -> None:
    from glacierfs.catalog import Catalog
    from glacierfs.inventory import Inventories, inventory_date, iter_archives

    catalog = Catalog(Path(catalog_path))
    catalog.add_vault("big")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    dated = inventory_date(Path(inventory))
    added, _ = Inventories(None, catalog, None).reconcile("big", iter_archives(Path(inventory)), dated)  # type: ignore[arg-type]
    catalog.set_inventory("big", None, None, time.time())
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    catalog.close()
    results.put((added, elapsed, before, peak))


def ls_l(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["ls", "-lR", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archives", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with scratch() as directory:
        work = Path(directory)
        inventory = work / "inventory.json"
        write_inventory(inventory, args.archives)
        emulator = ServedEmulator(data_dir=work / "emulator")
        boto3.client("glacier", endpoint_url=emulator.url, region_name="us-east-1").create_vault(vaultName="big")
        # The mount's catalog file for this endpoint: let the mount create it, then fill it.
        probe = Mount(work / "m", emulator.url)
        probe.unmount()
        catalog_path = next((work / "m" / "state").glob("catalog-*.sqlite"))
        results: multiprocessing.Queue = multiprocessing.Queue()
        child = multiprocessing.Process(target=reconcile, args=(str(catalog_path), str(inventory), results))
        child.start()
        added, reconcile_seconds, rss_before, rss_peak = results.get()
        child.join()

        local = work / "local"
        for directory in range(1000):
            (local / f"dir{directory:03d}").mkdir(parents=True)
        for index in range(args.archives):
            (local / f"dir{index % 1000:03d}" / f"file{index:06d}.dat").write_bytes(b"")

        mount = Mount(work / "m", emulator.url)
        try:
            vault = mount.path("big")
            first = {"mount": [], "local": []}
            second = {"mount": [], "local": []}
            for _ in range(args.rounds):
                drop_page_cache(2)  # dentries and inodes: the first listing starts cold
                first["mount"].append(ls_l(vault))
                second["mount"].append(ls_l(vault))
                first["local"].append(ls_l(local))
                second["local"].append(ls_l(local))
        finally:
            mount.unmount()
            emulator.stop()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    ratio = median(second["mount"]) / median(second["local"])
    print(
        f"list: {args.archives:,} archives in 1,000 directories, {args.rounds} alternating rounds, median, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"  reconcile of the inventory     {reconcile_seconds:6.2f} s, {added:,} entries, peak RSS "
        f"{rss_peak / 1024:.0f} MiB (from {rss_before / 1024:.0f} MiB)"
    )
    for side, label in (("mount", "ls -lR through the mount    "), ("local", "ls -lR of a local directory ")):
        print(f"  {label}   first {median(first[side]):6.2f} s, second {median(second[side]):6.2f} s")
    print(f"second listing: mount / local = {ratio:.2f}  (target <= 2.00)")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
