"""SHA-256 linear and tree hashes as Glacier defines them.

The tree hash hashes each 1 MiB leaf, then each concatenated pair, level by
level, carrying an odd node up unchanged. hashlib releases the GIL on large
buffers, so leaves are hashed on a small thread pool to use both cores.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

MiB = 1 << 20
# Below this a second thread costs more than it saves.
_PARALLEL_MIN = 4 * MiB

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

Buffer = bytes | bytearray | memoryview


def tree_aligned(size: int) -> bool:
    """Whether ``size`` is 1 MiB x 2^n: the only part sizes Glacier takes, and
    the range sizes whose ranges are whole subtrees of the tree hash."""
    return size >= MiB and not size & (size - 1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="treehash")
    return _pool


def _leaf_digests(view: memoryview, start: int, stop: int) -> list[bytes]:
    """Digests of the 1 MiB leaves that begin in [start, stop)."""
    sha256 = hashlib.sha256
    return [sha256(view[offset : offset + MiB]).digest() for offset in range(start, stop, MiB)]


def _all_leaf_digests(view: memoryview) -> list[bytes]:
    size = len(view)
    if size == 0:
        return [hashlib.sha256(b"").digest()]
    if size < _PARALLEL_MIN:
        return _leaf_digests(view, 0, size)
    leaves = (size + MiB - 1) // MiB
    middle = (leaves // 2) * MiB
    second_half = _executor().submit(_leaf_digests, view, middle, size)
    first_half = _leaf_digests(view, 0, middle)
    return first_half + second_half.result()


def combine(hashes: Sequence[bytes]) -> bytes:
    """The root over ``hashes`` taken as one level of the tree.

    Given the tree hashes of consecutive parts of 1 MiB x 2^n each (the last may
    be shorter), this is the tree hash of the whole archive.
    """
    if not hashes:
        raise ValueError("combine() needs at least one hash")
    level = list(hashes)
    sha256 = hashlib.sha256
    while len(level) > 1:
        paired = [sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def tree_hash_bytes(data: Buffer) -> bytes:
    """Binary tree hash of ``data``."""
    with memoryview(data) as view:
        return combine(_all_leaf_digests(view.cast("B")))


def tree_hash(data: Buffer) -> str:
    """Hex tree hash of ``data``."""
    return tree_hash_bytes(data).hex()


def part_hashes(data: Buffer) -> tuple[str, str]:
    """(linear SHA-256 hex, tree hash hex) of one part, as UploadMultipartPart needs.

    The linear hash runs on a pool thread while this thread builds the tree, so
    both cost about as much as one hashlib pass over the buffer.
    """
    with memoryview(data) as raw:
        view = raw.cast("B")
        if len(view) < _PARALLEL_MIN:
            return hashlib.sha256(view).hexdigest(), combine(_all_leaf_digests(view)).hex()
        linear: Future[str] = _executor().submit(lambda: hashlib.sha256(view).hexdigest())
        tree = combine(_leaf_digests(view, 0, len(view))).hex()
        return linear.result(), tree


class TreeHasher:
    """Tree hash of a stream fed in pieces of any size, in O(log n) memory.

    The Glacier tree with odd nodes carried up equals a right fold of the
    perfect subtrees a binary counter holds, so only those are kept.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        # (height, digest) of perfect subtrees, largest first.
        self._stack: list[tuple[int, bytes]] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def _push_leaf(self, digest: bytes) -> None:
        height = 0
        stack = self._stack
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            digest = hashlib.sha256(left + digest).digest()
            height += 1
        stack.append((height, digest))

    def update(self, data: Buffer) -> None:
        with memoryview(data) as raw:
            view = raw.cast("B")
            self._size += len(view)
            offset = 0
            if self._pending:
                take = min(MiB - len(self._pending), len(view))
                self._pending += view[:take]
                offset = take
                if len(self._pending) < MiB:
                    return
                self._push_leaf(hashlib.sha256(self._pending).digest())
                self._pending.clear()
            full_end = offset + ((len(view) - offset) // MiB) * MiB
            if full_end > offset:
                for digest in _leaf_digests(view, offset, full_end):
                    self._push_leaf(digest)
            self._pending += view[full_end:]

    def digest(self) -> bytes:
        stack = list(self._stack)
        if self._pending or not stack:
            stack.append((0, hashlib.sha256(self._pending).digest()))
        root = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            root = hashlib.sha256(left + root).digest()
        return root

    def hexdigest(self) -> str:
        return self.digest().hex()


def file_tree_hash(source: str | os.PathLike[str] | int, start: int = 0, stop: int | None = None) -> str:
    """Tree hash of bytes ``start`` to ``stop`` (default: the end) of a file,
    read a piece at a time; OSError if the file ends before ``stop``. ``source``
    is a path, or the descriptor of a file already open (the very file its
    reader gets), read by offset so that the reader's position stays put."""
    if not isinstance(source, int):
        with open(source, "rb", buffering=0) as handle:
            return file_tree_hash(handle.fileno(), start, stop)
    hasher = TreeHasher()
    buffer = memoryview(bytearray(16 * MiB))
    if stop is None:
        stop = os.fstat(source).st_size
    offset = start
    while offset < stop:
        count = os.preadv(source, [buffer[: min(stop - offset, len(buffer))]], offset)
        if not count:
            raise OSError(f"the file ends at byte {offset}, before byte {stop}")
        hasher.update(buffer[:count])
        offset += count
    return hasher.hexdigest()
