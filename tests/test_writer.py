"""The partitioner alone, and the uploader against the in-process emulator."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from glacierfs import errors
from glacierfs.emulator import Emulator
from glacierfs.glacier import GlacierClient
from glacierfs.treehash import tree_hash
from glacierfs.writer import MAX_PARTS, PartBuffers, Partitioner, Uploader, Writer, check_part_size

from .conftest import MiB, archives, boto_client

PART = MiB


def collect(partitioner: Partitioner, writes: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for offset, data in writes:
        for part_offset, part in partitioner.write(offset, data):
            assert part_offset == len(out) and len(part) == PART
            out += part
    tail_offset, tail = partitioner.tail()
    assert tail_offset == len(out) and len(tail) < PART
    return bytes(out + tail)


def test_partitioner_cuts_uneven_writes_into_parts() -> None:
    data = random.Random(1).randbytes(3 * PART + 12345)
    rng = random.Random(2)
    writes, offset = [], 0
    while offset < len(data):
        step = rng.choice([1, 4096, 131072, PART - 1, PART + 1])
        writes.append((offset, data[offset : offset + step]))
        offset += step
    assert collect(Partitioner(PART), writes) == data


def test_partitioner_fills_holes_with_zeros() -> None:
    result = collect(Partitioner(PART), [(0, b"ab"), (PART + 5, b"cd")])
    assert result == b"ab" + bytes(PART + 3) + b"cd"


def test_partitioner_extend_and_shrink_within_buffer() -> None:
    partitioner = Partitioner(PART)
    list(partitioner.write(0, b"x" * 100))
    partitioner.shrink(10)
    assert list(partitioner.extend(20)) == []
    assert partitioner.tail() == (0, b"x" * 10 + bytes(10))


def test_partitioner_rewrites_buffered_bytes_in_place() -> None:
    partitioner = Partitioner(PART)
    list(partitioner.write(0, b"0123456789"))
    list(partitioner.write(2, b"ab"))
    list(partitioner.write(4, b"cd"))
    assert partitioner.tail() == (0, b"01abcd6789")


def test_partitioner_rewrite_across_a_part_boundary_completes_the_part() -> None:
    partitioner = Partitioner(PART)
    list(partitioner.write(0, b"a" * (PART - 2)))
    [(offset, part)] = list(partitioner.write(PART - 4, b"bbbbbb"))
    assert offset == 0 and part == b"a" * (PART - 4) + b"bbbb"
    assert partitioner.tail() == (PART, b"bb")


def test_reused_buffers_never_leak_stale_bytes() -> None:
    buffers = PartBuffers(PART, keep=2)
    partitioner = Partitioner(PART, buffers)
    [(_, first)] = list(partitioner.write(0, b"x" * PART))
    buffers.give_back(first)  # as the uploader does once the part is sent
    list(partitioner.write(PART, b"y" * 10))
    partitioner.shrink(PART + 5)
    [(_, second)] = list(partitioner.extend(2 * PART))  # zeros, not the old x's
    assert second is first and second == b"y" * 5 + bytes(PART - 5)


def test_huge_hole_is_cut_part_by_part() -> None:
    parts = Partitioner(PART).write(1000 * PART, b"end")
    first = next(parts)  # a generator: nothing beyond one part is held
    assert first == (0, bytes(PART))
    assert sum(1 for _ in parts) == 999


def test_partitioner_refuses_writes_behind_sent_data() -> None:
    partitioner = Partitioner(PART)
    assert len(list(partitioner.write(0, bytes(PART + 10)))) == 1
    list(partitioner.write(PART, b"rewrite of buffered bytes is fine"))
    with pytest.raises(errors.NotSequential):
        list(partitioner.write(PART - 1, b"too late"))
    with pytest.raises(errors.NotSequential):
        partitioner.shrink(PART - 1)


@pytest.mark.parametrize("size", [PART * 3, 512 * 1024, 0, PART + 1, 8192 * PART])
def test_part_size_rule(size: int) -> None:
    with pytest.raises(errors.InvalidRequest):
        check_part_size(size)


def test_valid_part_sizes() -> None:
    assert [check_part_size(PART << n) for n in (0, 1, 12)] == [PART, 2 * PART, 4096 * PART]


@pytest.fixture
def glacier(inprocess: Emulator) -> GlacierClient:
    client = GlacierClient(endpoint_url=inprocess.url, max_attempts=2)
    client.create_vault("w")
    return client


class RecordedTrail:
    """What the Uploader tells its trail (catalog.UploadTrail), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def starting(self) -> None:
        self.events.append(("starting", ""))

    def started(self, upload_id: str) -> None:
        self.events.append(("started", upload_id))

    def ended(self, upload_id: str) -> None:
        self.events.append(("ended", upload_id))


def new_writer(glacier: GlacierClient, concurrency: int = 2, **hooks) -> Writer:  # type: ignore[no-untyped-def]
    executor = ThreadPoolExecutor(max_workers=concurrency)
    return Writer(Uploader(glacier, "w", "desc", PART, executor, concurrency, **hooks))


@pytest.mark.parametrize("size", [1, PART - 1, PART, PART + 1, 3 * PART + 7])
def test_writer_stores_exact_bytes(glacier: GlacierClient, inprocess: Emulator, size: int) -> None:
    data = random.Random(size).randbytes(size)
    trail = RecordedTrail()
    teed: dict[int, bytes] = {}
    writer = new_writer(glacier, trail=trail, tee=lambda at, part: teed.update({at: bytes(part)}))
    for offset in range(0, size, 200_000):
        writer.write(offset, data[offset : offset + 200_000])
    stored = writer.close()
    assert stored is not None and stored.size == size
    assert stored.archive.tree_hash == tree_hash(data)
    assert b"".join(teed[offset] for offset in sorted(teed)) == data  # what --cache-writes copies
    # One request for less than a part; multipart as soon as a full part exists,
    # recorded before it is asked for, and forgotten once complete.
    if size >= PART:
        upload_id = writer.upload_id
        assert trail.events == [("starting", ""), ("started", upload_id), ("ended", upload_id)]
    else:
        assert trail.events == []
    assert [(a["Size"], a["SHA256TreeHash"]) for a in archives(inprocess.url, "w")] == [(size, tree_hash(data))]
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="w")["UploadsList"] == []


def test_writer_of_nothing_stores_nothing(glacier: GlacierClient, inprocess: Emulator) -> None:
    assert new_writer(glacier).close() is None
    assert archives(inprocess.url, "w") == []


def test_failed_part_aborts_upload_and_close_raises(glacier: GlacierClient, inprocess: Emulator) -> None:
    trail = RecordedTrail()
    writer = new_writer(glacier, trail=trail)
    writer.write(0, bytes(2 * PART + 1))  # multipart is under way
    inprocess.settings.fault_rate = 1.0
    with pytest.raises(errors.GlacierFSError):
        writer.write(2 * PART + 1, bytes(3 * PART))
        writer.close()
    inprocess.settings.fault_rate = 0.0
    writer.abort()
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="w")["UploadsList"] == []
    assert archives(inprocess.url, "w") == []
    assert [event for event, _ in trail.events] == ["starting", "started", "ended"]  # aborted, so forgotten


def test_file_past_ten_thousand_parts_is_too_large(glacier: GlacierClient, inprocess: Emulator) -> None:
    writer = new_writer(glacier)
    writer.write(0, bytes(2 * PART + 1))
    with pytest.raises(errors.FileTooLarge):
        writer.write(MAX_PARTS * PART, b"x")  # the write that crosses the limit
    assert boto_client(inprocess.url).list_multipart_uploads(vaultName="w")["UploadsList"] == []


def test_truncate_grows_with_zeros(glacier: GlacierClient) -> None:
    writer = new_writer(glacier)
    writer.write(0, b"head")
    writer.truncate(PART + 10)
    stored = writer.close()
    assert stored is not None and stored.archive.tree_hash == tree_hash(b"head" + bytes(PART + 6))


def test_failed_initiate_fails_close_instead_of_storing_the_rest(glacier: GlacierClient, inprocess: Emulator) -> None:
    writer = new_writer(glacier)
    inprocess.settings.fault_rate = 1.0
    with pytest.raises(errors.GlacierFSError):
        writer.write(0, bytes(PART + 5))  # the first full part starts the multipart upload
    inprocess.settings.fault_rate = 0.0
    with pytest.raises(errors.GlacierFSError):
        writer.close()  # the 5 bytes left are not the file
    assert archives(inprocess.url, "w") == []


def test_idle_part_buffers_are_trimmed() -> None:
    buffers = PartBuffers(PART, keep=2)
    kept = bytearray(PART)
    buffers.give_back(kept)
    buffers.give_back(bytearray(10))  # not a part: never kept
    buffers.trim(idle_seconds=60)
    assert buffers.take() is kept
    buffers.give_back(kept)
    buffers.trim(idle_seconds=0)
    assert buffers.take() is not kept
