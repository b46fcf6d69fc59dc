"""Synthetic archive bodies: zeros, made on demand, for vaults seeded from an inventory.

A seeded vault of a million archives (``glacierfs emulator seed``) keeps no
bytes on disk: every archive marked synthetic reads as zeros, and its tree hash
is the tree hash of that many zeros. That hash costs no hashing of the body:
every full 1 MiB leaf is the same, the nodes above k equal leaves are the
same, and the SHA-256 of a short run of zeros is finished from a saved state.
"""

from __future__ import annotations

import hashlib
from typing import Any

from glacierfs.treehash import MiB

_BLOCK = 64  # SHA-256's block: the state after each block of zeros is saved
_states: list[Any] = []  # hash objects after 0, 64, 128, ... bytes of zeros, up to 1 MiB
_levels: list[bytes] = []  # tree hash of 1, 2, 4, ... MiB of zeros


def _zeros_digest(size: int) -> bytes:
    """SHA-256 of ``size`` (at most 1 MiB) zero bytes."""
    if not _states:
        state = hashlib.sha256()
        block = bytes(_BLOCK)
        for _ in range(MiB // _BLOCK + 1):
            _states.append(state.copy())
            state.update(block)
    hasher = _states[size // _BLOCK].copy()
    hasher.update(bytes(size % _BLOCK))
    return hasher.digest()


def _level(index: int) -> bytes:
    """The tree hash of 2**index MiB of zeros."""
    if not _levels:
        _levels.append(_zeros_digest(MiB))
    while len(_levels) <= index:
        _levels.append(hashlib.sha256(_levels[-1] * 2).digest())
    return _levels[index]


def zeros_tree_hash(size: int) -> str:
    """Glacier's tree hash of ``size`` zero bytes, in time logarithmic in ``size``."""
    if size <= MiB:
        return _zeros_digest(size).hex()
    count, rest = divmod(size, MiB)  # ``count`` equal leaves, then maybe a shorter one
    tail = _zeros_digest(rest) if rest else None
    level = 0
    while count + (tail is not None) > 1:
        if count % 2:  # the last equal node pairs with the tail, or is carried up alone
            tail = hashlib.sha256(_level(level) + tail).digest() if tail is not None else _level(level)
        count //= 2
        level += 1
    return (_level(level) if count else tail or b"").hex()


def zeros(size: int) -> bytes:
    return bytes(size)


def read_body(archive: Any, offset: int, size: int) -> bytes | None:
    """The bytes of a synthetic archive; None for an archive with a body on disk."""
    if not archive["synthetic"]:
        return None
    return zeros(max(0, min(size, archive["size"] - offset)))


def body_tree_hash(archive: Any, start: int, stop: int) -> str | None:
    """The tree hash of bytes [start, stop) of a synthetic archive (an aligned range
    of zeros is zeros); None for an archive with a body on disk."""
    if not archive["synthetic"]:
        return None
    return zeros_tree_hash(stop - start)
