#!/usr/bin/env python3
"""Tree-hash throughput, measured side by side in one run.

Prints part_hashes() on a 64 MiB buffer against one hashlib.sha256 pass over
the same buffer (target >= 0.9x) and against botocore's own hashing,
calculate_sha256 + calculate_tree_hash (target >= 2x). Rounds interleave the
methods and the median is kept, because this machine is noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchlib import MiB
from botocore.utils import calculate_sha256, calculate_tree_hash

from glacierfs.treehash import part_hashes, tree_hash


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    buffer = os.urandom(args.size_mib * MiB)

    def botocore_hashes() -> None:
        calculate_sha256(io.BytesIO(buffer), as_hex=True)
        calculate_tree_hash(io.BytesIO(buffer))

    methods: dict[str, Callable[[], object]] = {
        "hashlib.sha256 (one pass)": lambda: hashlib.sha256(buffer).digest(),
        "glacierfs part_hashes (linear + tree)": lambda: part_hashes(buffer),
        "glacierfs tree_hash": lambda: tree_hash(buffer),
        "botocore calculate_sha256 + calculate_tree_hash": botocore_hashes,
    }
    # Same answer as botocore, or the speed means nothing.
    linear, tree = part_hashes(buffer)
    assert linear == hashlib.sha256(buffer).hexdigest()
    assert tree == calculate_tree_hash(io.BytesIO(buffer))

    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, function in methods.items():
            samples[name].append(timed(function))
    throughput = {name: args.size_mib / statistics.median(times) for name, times in samples.items()}

    print(f"buffer {args.size_mib} MiB, {args.rounds} interleaved rounds, median, {os.cpu_count()} cores")
    for name, rate in throughput.items():
        print(f"  {name:<50} {rate:8.0f} MiB/s")
    vs_hashlib = throughput["glacierfs part_hashes (linear + tree)"] / throughput["hashlib.sha256 (one pass)"]
    vs_botocore = (
        throughput["glacierfs part_hashes (linear + tree)"]
        / throughput["botocore calculate_sha256 + calculate_tree_hash"]
    )
    print(f"part_hashes / hashlib.sha256 = {vs_hashlib:.2f}  (target >= 0.90)")
    print(f"part_hashes / botocore       = {vs_botocore:.2f}  (target >= 2.00)")
    return 0 if vs_hashlib >= 0.9 and vs_botocore >= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
