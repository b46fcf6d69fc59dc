"""The content cache: least recently used first out, one at a time, never the newest."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from glacierfs.cache import ContentCache
from glacierfs.treehash import tree_hash

MiB = 1 << 20


def add(cache: ContentCache, key: str, size: int) -> None:
    path = cache.scratch_file()
    path.write_bytes(os.urandom(size))
    cache.adopt(key, None, path)


def test_eviction_takes_just_enough_and_never_the_newest(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 5 * MiB)
    for key in ("a", "b", "c"):
        add(cache, key, MiB)
    assert [cache.has(k) for k in "abc"] == [True, True, True]
    handle = cache.open("a")  # a is now the most recently used
    assert handle is not None
    add(cache, "d", 3 * MiB)  # 6 MiB: b, the least recently used, goes; nothing else
    assert [cache.has(k) for k in "abcd"] == [True, False, True, True]
    add(cache, "huge", 8 * MiB)  # larger than the limit: everything else goes, it stays
    assert [cache.has(k) for k in ("a", "c", "d", "huge")] == [False, False, False, True]
    assert handle.read() and len(handle.read()) == 0  # the open reader still had its bytes
    handle.close()
    assert cache.usage() == (8 * MiB, 1)
    cache.close()


def test_order_of_use_survives_a_restart(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 3 * MiB)
    for key in ("old", "new"):
        add(cache, key, MiB)
    cache.open("old").close()  # type: ignore[union-attr]
    cache.close()
    again = ContentCache(tmp_path, 3 * MiB)
    add(again, "third", 2 * MiB)
    assert [again.has(k) for k in ("old", "new", "third")] == [True, False, True]
    again.close()


def test_adopt_moves_the_file_into_the_store_rather_than_copying_it(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 5 * MiB)
    path = cache.scratch_file(1000)
    path.write_bytes(b"x" * 1000)
    inode = path.stat().st_ino
    cache.adopt("k", None, path)
    assert not path.exists()
    handle = cache.open("k")
    assert handle is not None
    with handle:
        assert os.fstat(handle.fileno()).st_ino == inode
        assert handle.read() == b"x" * 1000
    cache.close()


def test_a_download_that_cannot_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, MiB)
    with pytest.raises(OSError) as raised:
        cache.scratch_file(shutil.disk_usage(tmp_path).free + 1)
    assert raised.value.errno == errno.ENOSPC
    assert list((tmp_path / "incoming").iterdir()) == []
    cache.close()


def stored_file(cache: ContentCache, key: str) -> Path:
    handle = cache.open(key)
    assert handle is not None
    with handle:
        return Path(handle.name)


def test_a_changed_file_is_checked_again_and_a_bad_one_never_served(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 16 * MiB)
    add(cache, "same", MiB)
    add(cache, "flipped", MiB)
    same, flipped = stored_file(cache, "same"), stored_file(cache, "flipped")
    content = same.read_bytes()
    os.utime(same, ns=(0, 0))  # new times, the same bytes: hashed again, still served
    handle = cache.open("same")
    assert handle is not None and handle.read() == content
    handle.close()
    with open(flipped, "r+b") as changed:  # one byte flipped, times put back as they were
        before = os.fstat(changed.fileno())
        changed.seek(MiB // 2)
        byte = changed.read(1)
        changed.seek(MiB // 2)
        changed.write(bytes([byte[0] ^ 0xFF]))
    os.utime(flipped, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cache.open("flipped") is None
    assert not cache.has("flipped")
    assert cache.usage() == (MiB, 1)
    cache.close()


def test_a_deleted_file_is_no_longer_cached(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 16 * MiB)
    add(cache, "k", MiB)
    stored_file(cache, "k").unlink()
    assert not cache.has("k")
    assert cache.open("k") is None
    assert cache.usage() == (0, 0)
    add(cache, "k", MiB)  # and it can come back
    assert cache.has("k")
    cache.close()


def test_a_removed_cache_directory_is_made_anew(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = ContentCache(directory, 16 * MiB)
    add(cache, "k", MiB)
    shutil.rmtree(directory)
    assert not cache.has("k")
    assert cache.open("k") is None
    assert cache.usage() == (0, 0)
    add(cache, "k", MiB)
    assert cache.has("k") and (directory / "content").is_dir()
    cache.close()


SCRATCH_WRITER = """
import sys, time
from pathlib import Path
from glacierfs.cache import ContentCache
cache = ContentCache(Path(sys.argv[1]), 1 << 20)
print(cache.scratch_file(), flush=True)
time.sleep(600)
"""


def test_downloads_left_by_a_killed_process_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    def writer() -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRATCH_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        return process, Path(process.stdout.readline().strip())

    killed, left = writer()
    live, kept = writer()
    try:
        killed.kill()  # kill -9: nothing of it cleans up
        killed.wait()
        assert left.exists()
        cache = ContentCache(tmp_path, MiB)
        assert not left.exists()
        assert kept.exists()  # another mount's download in progress
        cache.close()
    finally:
        for process in (killed, live):
            process.kill()
            process.wait()
            if process.stdout:
                process.stdout.close()


def test_an_item_from_before_the_index_kept_tree_hashes_is_served_once_checked(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 16 * MiB)
    add(cache, "old", MiB)
    add(cache, "bad", MiB)
    content = stored_file(cache, "old").read_bytes()
    cache.close()
    index = sqlite3.connect(tmp_path / "lru.sqlite")
    index.execute("UPDATE items SET tree_hash=NULL, inode=NULL")  # as an upgraded cache finds them
    index.commit()
    index.close()
    cache = ContentCache(tmp_path, 16 * MiB)
    assert not cache.has("old") and not cache.open("old")  # nothing to check it against: neither claimed nor served
    assert cache.usage() == (2 * MiB, 2)  # but kept, for a caller who knows its tree hash
    handle = cache.open("old", tree_hash=tree_hash(content))
    assert handle is not None and handle.read() == content
    handle.close()
    assert cache.has("old")  # checked once, it is known from now on
    assert cache.open("bad", tree_hash=tree_hash(content)) is None  # not the bytes it should be: dropped
    assert cache.usage() == (MiB, 1)
    cache.close()
