#!/usr/bin/env python3
"""Large vaults, measured side by side in one run.

1. Inventories (issue 12, items 1-3): for each size (100,000 and 1,000,000
   archives by default), a generated inventory in the service's JSON (every
   description format, a creation date per archive) is seeded into the
   emulator (``glacierfs emulator seed``), and a daemon-like child process
   applies it end to end into a fresh catalog: the inventory job, the ranged
   download into the state directory, the streaming parse, the reconcile in
   SQLite. Beside it, another child ``json.load``s the same file. Then a second
   inventory of the same vault, nothing changed, in a fresh child on that
   catalog. Targets: end to end <= 4 x json.load; the child's peak RSS grows by
   <= 150 MiB, and by about the same (+-20%) at every size.
2. Listing: ``ls -lR`` of the 100,000-archive vault through the mount, against
   ``ls -lR`` of the same tree on local disk; first and second listing,
   alternating rounds, median.

Run: .venv/bin/python scripts/bench_list.py [--sizes 100000,1000000] [--no-listing]
The 1,000,000-archive round needs about 2 GB of disk and a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import drop_page_cache, scratch

from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, generated_archive, write_generated_inventory

MiB = 1 << 20
VAULT = "big"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def json_load(path: str, results: multiprocessing.Queue) -> None:
    import json

    before = peak_rss_mib()
    start = time.perf_counter()
    with open(path, "rb") as handle:
        count = len(json.load(handle)["ArchiveList"])
    results.put((time.perf_counter() - start, peak_rss_mib() - before, count))


def apply_inventory(url: str, state: str, force: bool, results: multiprocessing.Queue) -> None:
    """What the daemon does for one inventory: ask, wait for the job, download, parse, reconcile."""
    import boto3

    from glacierfs.catalog import Catalog
    from glacierfs.glacier import GlacierClient
    from glacierfs.inventory import Inventories
    from glacierfs.writer import steady_heap

    steady_heap()  # as the daemon does at start: 16 MiB download buffers must not fragment the heap
    records: list[logging.LogRecord] = []  # the staging process, if one ran, logs its peak RSS
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("glacierfs.reconcile").addHandler(handler)
    logging.getLogger("glacierfs.reconcile").setLevel(logging.INFO)
    catalog = Catalog(Path(state) / "catalog.sqlite")
    catalog.add_vault(VAULT)
    inventories = Inventories(GlacierClient(url, credentials=("bench", "bench")), catalog, Path(state))
    job_id = inventories.refresh(VAULT, force=force)
    # The service prepares the output (hours in reality); the emulator, on the first look once complete.
    prepared = time.perf_counter()
    boto3.client("glacier", endpoint_url=url, region_name="us-east-1").describe_job(vaultName=VAULT, jobId=job_id)
    prepared = time.perf_counter() - prepared
    before = peak_rss_mib()
    start = time.perf_counter()
    inventories.poll_once()
    elapsed = time.perf_counter() - start
    growth = peak_rss_mib() - before
    files = catalog.stored_totals()[1]
    described = inventories.describe(VAULT)
    staged = [r.getMessage() for r in records if "staged by a process of its own" in r.getMessage()]
    worker = float(staged[0].rsplit("peak RSS ", 1)[1].split()[0]) if staged else 0.0
    catalog.close()
    results.put((elapsed, growth, files, prepared, described, worker))


def in_child(target: Any, *args: Any) -> Any:
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak RSS is the apply's alone
    results: multiprocessing.Queue = spawn.Queue()
    child = spawn.Process(target=target, args=(*args, results))
    child.start()
    while True:
        try:
            result = results.get(timeout=1)
            break
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(f"{target.__name__} died (exit {child.exitcode}): see its traceback above") from None
    child.join()
    return result


def bench_inventory(work: Path, count: int) -> dict[str, Any]:
    inventory = work / f"inventory-{count}.json"
    size = write_generated_inventory(inventory, count, vault=VAULT)
    data = work / f"emulator-{count}"
    started = time.perf_counter()
    subprocess.run(
        [*GLACIERFS, "emulator", "seed", "--data-dir", str(data), "--vault", VAULT, str(inventory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seeded = time.perf_counter() - started
    load_seconds, load_growth, listed = in_child(json_load, str(inventory))
    inventory.unlink()
    emulator = ServedEmulator(data_dir=data)
    state = work / f"state-{count}"
    try:
        first = in_child(apply_inventory, emulator.url, str(state), False)
        second = in_child(apply_inventory, emulator.url, str(state), True)
    finally:
        emulator.stop()
    assert first[2] == second[2] == listed == count, (first, second, listed)
    return {
        "count": count,
        "bytes": size,
        "seed": seeded,
        "load": load_seconds,
        "load_growth": load_growth,
        "first": first,
        "second": second,
    }


def ls_lr(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["ls", "-lR", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_listing(work: Path, count: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """ls -lR through a mount of the seeded vault (its inventory applied), and of the same tree on local disk."""
    inventory = work / "listing.json"
    write_generated_inventory(inventory, count, vault=VAULT)
    data = work / "emulator-listing"
    subprocess.run(
        [*GLACIERFS, "emulator", "seed", "--data-dir", str(data), "--vault", VAULT, str(inventory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    local = work / "local"
    for index in range(count):
        item, path = generated_archive(index)
        target = local / (path if path is not None else f"_unnamed/{item['ArchiveId']}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    emulator = ServedEmulator(data_dir=data)
    mount = Mount(work / "m", emulator.url, "--poll-interval", "0.2")
    times: dict[str, dict[str, list[float]]] = {which: {"mount": [], "local": []} for which in ("first", "second")}
    try:
        vault = mount.path(VAULT)
        os.listdir(vault)
        deadline = time.monotonic() + 600
        while not os.getxattr(vault, "user.glacier.inventory").decode()[:2].isdigit():
            assert time.monotonic() < deadline, "the inventory was not applied"
            time.sleep(0.2)
        for _ in range(rounds):
            drop_page_cache(2)  # dentries and inodes: the first listing starts cold
            times["first"]["mount"].append(ls_lr(vault))
            times["second"]["mount"].append(ls_lr(vault))
            times["first"]["local"].append(ls_lr(local))
            times["second"]["local"].append(ls_lr(local))
    finally:
        mount.unmount()
        emulator.stop()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="inventory sizes, comma-separated")
    parser.add_argument("--listing", type=int, default=100_000, help="archives in the listed vault (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]

    results = []
    listing = None
    with scratch() as directory:
        work = Path(directory)
        for count in sizes:
            results.append(bench_inventory(work, count))
        if args.listing:
            listing = bench_listing(work, args.listing, args.rounds)

    ok = True
    print(f"inventories: generated, every description format, {os.cpu_count()} cores")
    for r in results:
        first_s, first_growth, _, prepared, described, first_worker = r["first"]
        second_s, second_growth, *_, second_worker = r["second"]
        print(
            f"  {r['count']:>9,} archives, {r['bytes'] / MiB:,.0f} MiB: seed {r['seed']:.1f} s; the emulator "
            f"prepared its output in {prepared:.1f} s; json.load {r['load']:.2f} s (+{r['load_growth']:.0f} MiB)"
        )
        runs = (("first ", first_s, first_growth, first_worker), ("second", second_s, second_growth, second_worker))
        for label, seconds, growth, worker in runs:
            ratio = seconds / r["load"]
            ok &= ratio <= 4.0 and growth <= 150
            staged_apart = f", its staging process {worker:.0f} MiB" if worker else ""
            print(
                f"    {label} inventory end to end {seconds:6.2f} s = {ratio:4.1f} x json.load (target <= 4), "
                f"peak RSS +{growth:.0f} MiB (target <= 150){staged_apart}"
            )
        print(f"    user.glacier.inventory then: {described}")
    if len(results) > 1:
        for which in ("first", "second"):
            growths = [r[which][1] for r in results]
            spread = max(growths) / max(min(growths), 1) - 1
            ok &= spread <= 0.2
            shown = ", ".join(f"{r['count']:,}: +{r[which][1]:.0f} MiB" for r in results)
            print(f"  {which} inventory, RSS growth by size: {shown} (spread {spread:.0%}, target <= 20%)")
    if listing is not None:
        print(f"listing: {args.listing:,} archives, {args.rounds} alternating rounds, median")
        for side, label in (("mount", "ls -lR through the mount   "), ("local", "ls -lR of a local directory")):
            first = statistics.median(listing["first"][side])
            second = statistics.median(listing["second"][side])
            print(f"  {label}   first {first:6.2f} s, second {second:6.2f} s")
        for which, target in (("first", 3.0), ("second", 1.5)):
            ratio = statistics.median(listing[which]["mount"]) / statistics.median(listing[which]["local"])
            print(f"  {which} listing: mount / local = {ratio:.2f}  (target <= {target:.1f}, issue 12 item 4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
