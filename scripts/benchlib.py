"""What the benchmarks in scripts/ share: the repository on sys.path, fake
credentials for the emulator, scratch space, random files, dropping caches."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

MiB = 1 << 20


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory; $BENCH_DIR chooses the disk it lives on."""
    return tempfile.TemporaryDirectory(prefix="glacierfs-bench-", dir=os.environ.get("BENCH_DIR"))


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = min(remaining, 64 * MiB)
            handle.write(os.urandom(chunk))
            remaining -= chunk


def drop_page_cache(what: int = 3) -> bool:
    """Drop the kernel's caches (3: pages, dentries and inodes; 2: dentries and
    inodes). Needs root; False when it could not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text(f"{what}\n")
        return True
    except OSError:
        return False
