"""Tree hashes against two independent computations: a literal reading of the
definition, and botocore's own calculate_tree_hash."""

from __future__ import annotations

import hashlib
import io
import itertools
import random

import pytest
from botocore.utils import calculate_tree_hash
from hypothesis import given, settings
from hypothesis import strategies as st

from glacierfs.treehash import MiB, TreeHasher, combine, file_tree_hash, part_hashes, tree_hash, tree_hash_bytes


def reference_tree_hash(data: bytes) -> str:
    """The definition, recursively: split into 1 MiB leaves, pair up, carry odd nodes."""
    level = [hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, max(len(data), 1), MiB)]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            pair = level[i : i + 2]
            nxt.append(hashlib.sha256(b"".join(pair)).digest() if len(pair) == 2 else pair[0])
        level = nxt
    return level[0].hex()


SIZES = [1, 1000, MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB, 5 * MiB + 7, 7 * MiB, 9 * MiB - 3]


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(7).randbytes(9 * MiB)


@pytest.mark.parametrize("size", SIZES)
def test_tree_hash_matches_definition_and_botocore(blob: bytes, size: int) -> None:
    data = blob[:size]
    expected = reference_tree_hash(data)
    assert tree_hash(data) == expected
    assert calculate_tree_hash(io.BytesIO(data)) == expected


@pytest.mark.parametrize("size", SIZES)
def test_part_hashes_gives_linear_and_tree(blob: bytes, size: int) -> None:
    data = blob[:size]
    linear, tree = part_hashes(data)
    assert linear == hashlib.sha256(data).hexdigest()
    assert tree == reference_tree_hash(data)


def test_known_value_of_one_byte() -> None:
    # One leaf: the tree hash is the plain SHA-256.
    assert tree_hash(b"a") == hashlib.sha256(b"a").hexdigest()


def test_inputs_of_every_buffer_type(blob: bytes) -> None:
    data = blob[: 2 * MiB + 5]
    expected = reference_tree_hash(data)
    assert tree_hash(bytearray(data)) == expected
    assert tree_hash(memoryview(data)) == expected


@pytest.mark.parametrize("part_mib", [1, 2, 4])
@pytest.mark.parametrize("size", [MiB, 3 * MiB, 7 * MiB + 1, 9 * MiB - 3])
def test_combine_of_parts_is_archive_hash(blob: bytes, part_mib: int, size: int) -> None:
    data = blob[:size]
    part = part_mib * MiB
    hashes = [tree_hash_bytes(data[offset : offset + part]) for offset in range(0, size, part)]
    assert combine(hashes).hex() == reference_tree_hash(data)


def test_combine_many_parts_is_linear() -> None:
    # 10,000 parts (the service's maximum): the pop(0) bug would make this quadratic.
    hashes = [hashlib.sha256(str(i).encode()).digest() for i in range(10_000)]
    root = combine(hashes)
    level = hashes
    while len(level) > 1:
        level = [
            hashlib.sha256(level[i] + level[i + 1]).digest() if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    assert root == level[0]


def test_combine_refuses_nothing() -> None:
    with pytest.raises(ValueError):
        combine([])


@pytest.mark.parametrize("size", SIZES)
def test_streaming_hasher_in_uneven_pieces(blob: bytes, size: int) -> None:
    data = blob[:size]
    rng = random.Random(size)
    hasher = TreeHasher()
    offset = 0
    while offset < size:
        step = rng.choice([1, 7, 4096, 65536, MiB - 1, MiB, MiB + 3, 3 * MiB])
        hasher.update(data[offset : offset + step])
        offset += step
    assert hasher.size == size
    assert hasher.hexdigest() == reference_tree_hash(data)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4 * MiB + 17), max_size=6))
def test_streaming_hasher_any_split(blob: bytes, cuts: list[int]) -> None:
    data = blob[: 4 * MiB + 17]
    points = sorted(set([0, len(data), *cuts]))
    hasher = TreeHasher()
    for start, stop in itertools.pairwise(points):
        hasher.update(data[start:stop])
    assert hasher.hexdigest() == reference_tree_hash(data)


def test_streaming_hasher_digest_does_not_end_the_stream(blob: bytes) -> None:
    hasher = TreeHasher()
    hasher.update(blob[: MiB + 1])
    assert hasher.hexdigest() == reference_tree_hash(blob[: MiB + 1])
    hasher.update(blob[MiB + 1 : 3 * MiB])
    assert hasher.hexdigest() == reference_tree_hash(blob[: 3 * MiB])


def test_file_tree_hash_of_whole_file_and_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(3).randbytes(17 * MiB + 5)  # more than one 16 MiB read
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_tree_hash(path) == tree_hash(data)
    assert file_tree_hash(path, MiB, 3 * MiB) == tree_hash(data[MiB : 3 * MiB])
    with pytest.raises(OSError):
        file_tree_hash(path, 0, len(data) + 1)


def test_file_tree_hash_of_an_open_descriptor_leaves_its_position(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "open"
    data = bytes(range(256)) * (5 * MiB // 256 + 3)
    path.write_bytes(data)
    with open(path, "rb") as reader:
        assert reader.read(10) == data[:10]
        assert file_tree_hash(reader.fileno()) == tree_hash(data)
        assert reader.read(10) == data[10:20]
