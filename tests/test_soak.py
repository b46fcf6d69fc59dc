"""Long runs (marked slow, still run by CI): transient faults during cp -r,
rsync -a and retrieval; writers and readers at once."""

from __future__ import annotations

import errno
import filecmp
import random
import re
import threading
import time
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, run
from glacierfs.treehash import tree_hash

from .conftest import MiB, archives, boto_client

pytestmark = [pytest.mark.mount, pytest.mark.slow]


def make_files(root: Path, count: int = 200) -> dict[str, bytes]:
    """Sizes from 1 byte to 50 MiB: mostly small, a few large, both ends included."""
    rng = random.Random(2026)
    sizes = (
        [1, 50 * MiB]
        + [int(2 ** rng.uniform(0, 18)) for _ in range(count - 22)]
        + [int(2 ** rng.uniform(20, 25.6)) for _ in range(20)]
    )
    files = {}
    for index, size in enumerate(sizes):
        rel = f"d{index % 7}/sub{index % 3}/f{index:03d}.bin"
        data = rng.randbytes(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


def test_transient_faults_lose_nothing(inprocess: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = make_files(source)
    mount = Mount(
        tmp_path,
        inprocess.url,
        "--part-size",
        str(8 * MiB),
        "--max-attempts",
        "10",
        "--poll-interval",
        "0.2",
        "--cache-size",
        "2G",
    )
    try:
        vault = mount.path("vault")
        vault.mkdir()
        inprocess.settings.fault_rate = 0.10
        run("cp", "-r", source, vault / "copied")
        run("rsync", "-a", f"{source}/", vault / "synced")
        retrieved = run(*GLACIERFS, "retrieve", "--yes", "--wait", vault / "copied")
        assert "200/200 cached" in retrieved.stdout
        comparison = filecmp.dircmp(source, vault / "copied")
        mismatched = [p for p in files if not filecmp.cmp(source / p, vault / "copied" / p, shallow=False)]
        assert not mismatched and not comparison.left_only and not comparison.right_only
    finally:
        inprocess.settings.fault_rate = 0.0
        mount.unmount()
    by_path = {}
    for archive in archives(inprocess.url, "vault"):
        match = re.fullmatch(r"<m><v>4</v><p>([^<]+)</p>.*", archive["ArchiveDescription"])
        if match:
            import base64

            by_path[base64.b64decode(match[1]).decode()] = archive["SHA256TreeHash"]
    for top in ("copied", "synced"):
        for rel, data in files.items():
            assert by_path.get(f"{top}/{rel}") == tree_hash(data), f"{top}/{rel}"
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="vault")["UploadsList"] == []


def test_writers_and_readers_at_once(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(
        tmp_path,
        inprocess.url,
        "--part-size",
        str(MiB),
        "--poll-interval",
        "0.1",
        "--max-retrieval-jobs",
        "100000",
        "--max-retrieval-bytes",
        "100G",
    )
    vault = mount.path("busy")
    vault.mkdir()
    written: dict[str, bytes] = {}
    lock = threading.Lock()
    problems: list[str] = []
    stop = time.monotonic() + 60

    def writer(number: int) -> None:
        rng = random.Random(number)
        count = 0
        while time.monotonic() < stop:
            name = f"w{number}-{count}.bin"
            data = rng.randbytes(rng.choice([0, 1, 5000, MiB - 1, 2 * MiB + 3]))
            try:
                (vault / name).write_bytes(data)
            except OSError as error:
                problems.append(f"write {name}: {error}")
                return
            with lock:
                written[name] = data
            count += 1

    def reader(number: int) -> None:
        rng = random.Random(100 + number)
        while time.monotonic() < stop:
            with lock:
                names = list(written)
            if not names:
                time.sleep(0.05)
                continue
            name = rng.choice(names)
            try:
                data = (vault / name).read_bytes()
            except OSError as error:
                if error.errno != errno.EAGAIN:
                    problems.append(f"read {name}: {error}")
                    return
                time.sleep(0.05)
                continue
            if data != written[name]:
                problems.append(f"read {name}: wrong bytes")
                return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert not any(thread.is_alive() for thread in threads), "a thread hung"
        rss = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{mount.pid}/status").read_text())[1]) // 1024
    finally:
        mount.unmount()
    assert problems == []
    assert len(written) > 20
    # Writers hold at most part x (concurrency + 2) each; 4 of them, plus the daemon itself.
    assert rss < 60 + 4 * 6 + 200, f"peak RSS {rss} MiB"
