"""The mount's settings, fixed once the command line is parsed."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from glacierfs.writer import DEFAULT_PART_SIZE

GiB = 1 << 30
SIZE = re.compile(r"(?i)^(\d+)\s*([kmgt]?)i?b?$")


def parse_size(text: str) -> int:
    """'64M', '1GiB', '1048576' -> bytes (binary units)."""
    match = SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64M or 1G")
    return int(match[1]) << (10 * " kmgt".index((match[2] or " ").lower()))


def non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


@dataclass(frozen=True)
class MountOptions:
    # Writing
    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = 4  # parts uploaded at once per file; chunks downloaded at once
    keep_replaced: bool = False
    cache_writes: bool = False
    cleanup_interval: float = 30.0
    write_back: bool = False  # close() returns once the file is in the spool; uploads follow
    spool_dir: Path | None = None  # the spool's parent; None: the state directory
    transfers: int = 32  # queued files uploaded at once: 32 hide a 300 ms round trip at ~100 files/s
    settle: float = 2.0  # seconds a queued file waits after its close before it goes
    # Reading
    tier: str = "Standard"
    tier_fallback: bool = True  # Expedited without capacity: Standard instead
    wait: float = 0.0  # seconds open() waits for a retrieval before EAGAIN
    poll_interval: float | None = None  # by tier when None
    max_retrieval_bytes: int = 10 * GiB
    max_retrieval_jobs: int = 50
    ranged_threshold: int = GiB
    range_size: int = 64 << 20
    cache_size: int = 10 * GiB
    # Listing
    vault_list_ttl: float = 60.0
    inventory_max_age: float = 24 * 3600.0
    manifest_delay: float = 60.0
    # Talking to Glacier, and to the kernel
    max_attempts: int = 5
    passthrough: bool = True
    allow_other: bool = False
