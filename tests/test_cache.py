"""The content cache: least recently used first out, one at a time, never the newest."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from glacierfs.cache import ContentCache

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
