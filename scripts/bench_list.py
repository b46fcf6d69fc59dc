#!/usr/bin/env python3
"""Large vaults, measured side by side in one run.

1. Inventories (issue 12, items 1-3): for each size (100,000 and 1,000,000
   archives by default), a generated inventory in the service's JSON (every
   description format, a creation date per archive) is seeded into the
   emulator (``glacierfs emulator seed``), and a daemon-like child process
   applies it end to end into a fresh catalog: the inventory job, the ranged
   download into the state directory, the streaming parse, the reconcile in
   SQLite; three times (--apply-rounds), each into a fresh catalog, the
   median the figure and the most memory any run took its memory. Beside it,
   a fresh child ``json.load``s the same file before, between and after the
   applies (the median is the denominator, the fastest is printed too). Then
   a second inventory of the same vault, nothing changed, in a fresh child on
   the last catalog. Targets: end to end <= 4 x json.load; the child's peak
   RSS grows by <= 150 MiB, and by about the same (+-20%) at every size.
2. Listing: through the mount against the same tree on local disk, alternating
   rounds, median: a cold ``ls -l`` of a directory of 10,000 entries (target <=
   2 x); ``ls -lR`` of the 100,000-archive vault, first (cold, <= 3 x) and second
   (<= 1.5 x); cold ``du -s`` and ``find`` of it. And the daemon's memory.

3. Walks: ``du -s``, ``find`` and ``ls -lR`` of the largest inventory's vault
   through a mount of the catalog it filled; the daemon's memory before and after.
4. Description formats: a vault filled by another tool holds that tool's
   format alone. For each, a generated inventory of --formats archives (100,000)
   all in it is staged by one process as a first inventory's staging processes
   do (parse, decode, stage); its CPU per archive, the best of --rounds runs
   taken in turn, and the ratio to glacierfs's own format.

Run: .venv/bin/python scripts/bench_list.py [--sizes 100000,1000000] [--listing-only] [--listing 0] [--formats 0]
The listing part runs first; the 1,000,000-archive round, last, needs about 2 GB
of disk and a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import resource
import shutil
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
ACCOUNT = "123456789012"  # the emulator's
FLAT = "flat"  # a vault of one large directory


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
    from glacierfs.state import account_key
    from glacierfs.writer import steady_heap

    steady_heap()  # as the daemon does at start: 16 MiB download buffers must not fragment the heap
    records: list[logging.LogRecord] = []  # the staging process, if one ran, logs its peak RSS
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("glacierfs.staging").addHandler(handler)
    logging.getLogger("glacierfs.staging").setLevel(logging.INFO)
    glacier = GlacierClient(url, credentials=("bench", "bench"))
    # Named as a mount names it (state.py), so that bench_walk's mount finds the tree this filled.
    catalog = Catalog(Path(state) / f"catalog-{account_key(ACCOUNT, glacier.region)}.sqlite")
    catalog.add_vault(VAULT)
    inventories = Inventories(glacier, catalog, Path(state))
    job_id = inventories.refresh(VAULT, force=force)
    # The service prepares the output (hours in reality); the emulator, on the first look once complete.
    prepared = time.perf_counter()
    boto3.client("glacier", endpoint_url=url, region_name="us-east-1").describe_job(vaultName=VAULT, jobId=job_id)
    prepared = time.perf_counter() - prepared
    # The set-up's writes (the generated file, the emulator's data and the output
    # it just prepared: over a GB at a million archives) are flushed first: else
    # the kernel writes them back during the apply, whose own fsyncs then wait
    # behind them (seen: 7.3 s in one run, 8.9 and 9.5 s in others).
    os.sync()
    before = peak_rss_mib()
    start = time.perf_counter()
    inventories.poll_once()
    elapsed = time.perf_counter() - start
    growth = peak_rss_mib() - before
    files = catalog.stored_totals()[1]
    described = inventories.describe(VAULT)
    staged = [r.getMessage() for r in records if "staged by" in r.getMessage() and "peak RSS" in r.getMessage()]
    peaks = [part.split()[0] for part in staged[0].split("peak RSS ")[1:]] if staged else []
    worker = " and ".join(f"{peak} MiB" for peak in peaks)  # the peak of each staging process that ran
    catalog.close()
    results.put((elapsed, growth, files, prepared, described, worker))


# The formats of the tools whose vaults users bring (testing.FORMATS), glacierfs's own first.
TOOLS = {
    "fastglacier-v4": "glacierfs, FastGlacier v4, QNAP HBS",
    "fastglacier-v3": "FastGlacier v3",
    "fastglacier-v1": "FastGlacier v1",
    "mt2": "mt-aws-glacier (mt2)",
    "mt1": "mt-aws-glacier (mt1)",
    "cloudberry": "CloudBerry",
    "qnap": "QNAP's Glacier app",
    "raw": "glacier-cli, glacier-cmd (the name)",
}


def bench_formats(work: Path, count: int, rounds: int) -> dict[str, float]:
    """CPU seconds per archive of staging an inventory all in one format, by format."""
    from glacierfs import inventoryfile, staging

    files = {}
    for kind in TOOLS:
        files[kind] = work / f"formats-{kind}.json"
        write_generated_inventory(files[kind], count, kind=kind)
    cpu: dict[str, list[float]] = {kind: [] for kind in TOOLS}
    scratch_db = work / "formats.sqlite"
    for _ in range(rounds):
        for kind, path in files.items():
            halves = inventoryfile.split(path, 2)
            assert halves is not None
            start = time.process_time()
            for first, last in halves:
                scratch_db.unlink(missing_ok=True)
                staging.stage_run(str(path), str(first), str(last), str(scratch_db), "decode")
            cpu[kind].append((time.process_time() - start) / count)
    for path in files.values():
        path.unlink()
    scratch_db.unlink(missing_ok=True)
    return {kind: min(runs) for kind, runs in cpu.items()}


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


def bench_inventory(work: Path, count: int, rounds: int) -> dict[str, Any]:
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
    # The first inventory is applied ``rounds`` times, each into a fresh catalog,
    # and json.load runs in a fresh child before, between and after the applies:
    # on this machine one run of either moves by 10-20% from one minute to the
    # next (json.load's with how recently the VM's memory was touched: it
    # allocates 1.5 GiB at a million archives), so both figures are medians.
    loads = [in_child(json_load, str(inventory))]
    emulator = ServedEmulator(data_dir=data)
    firsts = []
    state = work / f"state-{count}"  # the last round's catalog is kept, for the second inventory and the walk
    try:
        for _ in range(rounds):
            shutil.rmtree(state, ignore_errors=True)
            firsts.append(in_child(apply_inventory, emulator.url, str(state), False))
            loads.append(in_child(json_load, str(inventory)))
        second = in_child(apply_inventory, emulator.url, str(state), True)
    finally:
        emulator.stop()
    loads.append(in_child(json_load, str(inventory)))
    inventory.unlink()
    listed = loads[0][2]
    assert all(first[2] == listed for first in firsts) and second[2] == listed == count, (firsts, second, listed)
    median_first = sorted(firsts)[len(firsts) // 2]
    # The figure is the median run's, its memory the most any run grew by.
    first = (median_first[0], max(run[1] for run in firsts), *median_first[2:])
    return {
        "data": data,
        "state": state,
        "count": count,
        "bytes": size,
        "seed": seeded,
        "loads": [seconds for seconds, _, _ in loads],
        "load": statistics.median(seconds for seconds, _, _ in loads),
        "load_growth": statistics.median(growth for _, growth, _ in loads),
        "first": first,
        "firsts": [run[0] for run in firsts],
        "second": second,
    }


def timed(*command: str | Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(part) for part in command], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def daemon_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def write_flat_inventory(path: Path, count: int, vault: str) -> None:
    """``count`` archives side by side at the top of a vault, named by glacierfs's own format."""
    import json

    from glacierfs import names, timestamps

    archives = [
        {
            "ArchiveId": f"F{index:011d}" + "B" * 126,
            "ArchiveDescription": names.encode(f"file{index:05d}.dat", 1_600_000_000 + index),
            "CreationDate": timestamps.iso(1_700_000_000 + index)[:-1] + ".000Z",
            "Size": 1000 + index,
            "SHA256TreeHash": "0" * 64,
        }
        for index in range(count)
    ]
    arn = f"arn:aws:glacier:us-east-1:123456789012:vaults/{vault}"
    path.write_text(json.dumps({"VaultARN": arn, "InventoryDate": "2026-01-01T00:00:00Z", "ArchiveList": archives}))


def seed(data: Path, vault: str, inventory: Path) -> None:
    subprocess.run(
        [*GLACIERFS, "emulator", "seed", "--data-dir", str(data), "--vault", vault, str(inventory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    inventory.unlink()


def wait_for_inventory(vault: Path) -> None:
    os.listdir(vault)
    deadline = time.monotonic() + 600
    while not os.getxattr(vault, "user.glacier.inventory").decode()[:2].isdigit():
        assert time.monotonic() < deadline, f"the inventory of {vault.name} was not applied"
        time.sleep(0.2)


def mount_of(work: Path, url: str, state: Path | None = None) -> Mount:
    extra = ["--poll-interval", "0.2", "--inventory-max-age", "1e9"]
    if state is not None:
        extra += ["--state-dir", str(state)]  # the later one wins: a catalog the inventory bench filled
    return Mount(work, url, *extra)


def bench_listing(work: Path, count: int, flat: int, rounds: int) -> dict[str, Any]:
    """Through a mount of the seeded vaults (their inventories applied), and of the
    same trees on local disk, alternating, each listing cold where it says so:
    ``ls -l`` of a directory of ``flat`` entries, ``ls -lR`` of the ``count``-archive
    vault (first cold, second at once), ``du -s`` and ``find`` of it (cold)."""
    data = work / "emulator-listing"
    inventory = work / "listing.json"
    write_generated_inventory(inventory, count, vault=VAULT)
    seed(data, VAULT, inventory)
    write_flat_inventory(inventory, flat, FLAT)
    seed(data, FLAT, inventory)
    local = work / "local"
    for index in range(count):
        item, path = generated_archive(index)
        target = local / VAULT / (path if path is not None else f"_unnamed/{item['ArchiveId']}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    (local / FLAT).mkdir()
    for index in range(flat):
        (local / FLAT / f"file{index:05d}.dat").write_bytes(b"")
    emulator = ServedEmulator(data_dir=data)
    mount = mount_of(work / "m", emulator.url)
    kinds = ("ls -l flat", "ls -lR first", "ls -lR second", "du -s", "find")
    times: dict[str, dict[str, list[float]]] = {kind: {"mount": [], "local": []} for kind in kinds}
    try:
        for vault in (VAULT, FLAT):
            wait_for_inventory(mount.path(vault))
        before = daemon_memory(mount.pid)
        for _ in range(rounds):
            for side, root in (("mount", mount.mountpoint), ("local", local)):
                drop_page_cache(2)  # dentries and inodes: the listing starts cold
                times["ls -l flat"][side].append(timed("ls", "-l", root / FLAT))
                drop_page_cache(2)
                times["ls -lR first"][side].append(timed("ls", "-lR", root / VAULT))
                times["ls -lR second"][side].append(timed("ls", "-lR", root / VAULT))
                drop_page_cache(2)
                times["du -s"][side].append(timed("du", "-s", root / VAULT))
                drop_page_cache(2)
                times["find"][side].append(timed("find", root / VAULT))
        after = daemon_memory(mount.pid)
    finally:
        mount.unmount()
        emulator.stop()
    return {"times": times, "memory": (before, after)}


def bench_walk(work: Path, result: dict[str, Any]) -> None:
    """``du -s``, ``find`` and ``ls -lR`` of the vault of an inventory bench, through a
    mount of the catalog it filled, cold; the daemon's memory before and after."""
    emulator = ServedEmulator(data_dir=result["data"])
    mount = mount_of(work / f"walk-{result['count']}", emulator.url, result["state"])
    try:
        vault = mount.path(VAULT)
        assert os.listdir(vault), "the mount shows the vault empty: not the catalog the inventory filled"
        before = daemon_memory(mount.pid)
        walks = {}
        for name, command in (("du -s", ["du", "-s"]), ("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
            drop_page_cache(2)
            walks[name] = timed(*command, vault)
        result["walk"] = {"times": walks, "memory": (before, daemon_memory(mount.pid))}
    finally:
        mount.unmount()
        emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="inventory sizes, comma-separated")
    parser.add_argument("--listing", type=int, default=100_000, help="archives in the listed vault (0: skip)")
    parser.add_argument("--flat", type=int, default=10_000, help="entries of the one large directory listed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-rounds", type=int, default=3, help="first inventories applied per size (median)")
    parser.add_argument(
        "--listing-only", action="store_true", help="only the listing part: no inventory sizes, no formats"
    )
    parser.add_argument(
        "--no-walk", dest="walk", action="store_false", help="skip du -s, find and ls -lR of the largest inventory"
    )
    parser.add_argument("--formats", type=int, default=100_000, help="archives per description format (0: skip)")
    args = parser.parse_args()
    sizes = [] if args.listing_only else [int(size) for size in args.sizes.split(",") if size]

    results = []
    listing = None
    with scratch() as directory:
        work = Path(directory)
        if args.listing:  # first: the largest inventory comes last, and only once
            listing = bench_listing(work, args.listing, args.flat, args.rounds)
        for count in sorted(sizes):
            results.append(bench_inventory(work, count, args.apply_rounds))
        if results and args.walk:
            bench_walk(work, results[-1])
        formats = bench_formats(work, args.formats, args.rounds) if args.formats and not args.listing_only else None

    ok = True
    if results:
        print(f"inventories: generated, every description format, {os.cpu_count()} cores")
    for r in results:
        first_s, first_growth, _, prepared, described, first_worker = r["first"]
        second_s, second_growth, *_, second_worker = r["second"]
        loads = ", ".join(f"{seconds:.2f}" for seconds in r["loads"])
        print(
            f"  {r['count']:>9,} archives, {r['bytes'] / MiB:,.0f} MiB: seed {r['seed']:.1f} s; the emulator "
            f"prepared its output in {prepared:.1f} s"
        )
        print(
            f"    json.load in fresh children (before, between and after the applies) {loads} s: "
            f"median {r['load']:.2f} s (+{r['load_growth']:.0f} MiB), fastest {min(r['loads']):.2f} s"
        )
        runs = (("first ", first_s, first_growth, first_worker), ("second", second_s, second_growth, second_worker))
        for label, seconds, growth, worker in runs:
            ratio = seconds / r["load"]
            ok &= ratio <= 4.0 and growth <= 150
            staged_apart = f", its staging processes {worker}" if worker else ""
            print(
                f"    {label} inventory end to end {seconds:6.2f} s = {ratio:4.1f} x json.load's median "
                f"({seconds / min(r['loads']):4.1f} x its fastest; target <= 4), "
                f"peak RSS +{growth:.0f} MiB (target <= 150){staged_apart}"
            )
            if label == "first " and len(r["firsts"]) > 1:
                shown = ", ".join(f"{run:.2f}" for run in r["firsts"])
                print(f"      (the median of {len(r['firsts'])} runs, each into a fresh catalog: {shown} s)")
        print(f"    user.glacier.inventory then: {described}")
    if len(results) > 1:
        for which in ("first", "second"):
            growths = [r[which][1] for r in results]
            spread = max(growths) / max(min(growths), 1) - 1
            ok &= spread <= 0.2
            shown = ", ".join(f"{r['count']:,}: +{r[which][1]:.0f} MiB" for r in results)
            print(f"  {which} inventory, RSS growth by size: {shown} (spread {spread:.0%}, target <= 20%)")
    if listing is not None:
        times = listing["times"]
        print(
            f"listing: {args.listing:,} archives (ls -lR, du -s, find), a directory of {args.flat:,} (ls -l); "
            f"{args.rounds} alternating rounds, median; cold = dentries and inodes dropped"
        )
        targets = {"ls -l flat": 2.0, "ls -lR first": 3.0, "ls -lR second": 1.5}
        for kind, label in (
            ("ls -l flat", f"cold ls -l, {args.flat:,} entries"),
            ("ls -lR first", "cold ls -lR"),
            ("ls -lR second", "ls -lR again"),
            ("du -s", "cold du -s"),
            ("find", "cold find"),
        ):
            mounted, local = statistics.median(times[kind]["mount"]), statistics.median(times[kind]["local"])
            ratio = mounted / local
            target = targets.get(kind)
            if target is not None:
                ok &= ratio <= target
            shown = f"(target <= {target:.1f})" if target is not None else ""
            print(f"  {label:<27} mount {mounted:6.2f} s, local {local:6.2f} s: mount / local = {ratio:5.2f} {shown}")
        (rss_before, hwm_before), (rss_after, hwm_after) = listing["memory"]
        print(
            f"  the daemon: RSS {rss_before:.0f} -> {rss_after:.0f} MiB, peak {hwm_before:.0f} -> {hwm_after:.0f} MiB"
        )
    walked = [r for r in results if "walk" in r]
    for r in walked:
        walk = r["walk"]
        shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in walk["times"].items())
        (rss_before, hwm_before), (rss_after, hwm_after) = walk["memory"]
        print(f"walk: {r['count']:,} archives through a mount, cold: {shown}")
        print(
            f"  the daemon: RSS {rss_before:.0f} -> {rss_after:.0f} MiB, peak {hwm_before:.0f} -> {hwm_after:.0f} MiB"
        )
    if formats is not None:
        print(
            f"description formats: {args.formats:,} archives all in one format, staged by one process "
            f"(parse, decode, stage); CPU per archive, the best of {args.rounds} runs in turn"
        )
        own = formats["fastglacier-v4"]
        for kind, per_archive in formats.items():
            print(f"  {TOOLS[kind]:<38} {per_archive * 1e6:5.2f} us = {per_archive / own:4.2f} x glacierfs's own")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
