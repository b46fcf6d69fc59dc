"""Parsing inventory documents: orjson's spans give what ijson gives."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from glacierfs import errors, inventoryfile
from glacierfs.catalog import Catalog

DOCUMENT = "ArchiveList.item"

# Strings that look like the places a span is cut, or that JSON must escape.
TRICKY = st.sampled_from(['},{"ArchiveId":', '"', "\\", '\\"},{', "\ud800", "\udc80", "é", "\x00", "]}", "\n"])
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=8)), max_size=4).map("".join)
# Within +-(2^63 - 1): beyond, yajl refuses what orjson reads (see the last test).
NUMBER = st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
SCALAR = st.one_of(TEXT, NUMBER, st.booleans(), st.none())
# Values nested as a description may be: objects that are archives' look-alikes among them.
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["ArchiveId", "a", "Size"]), inner, max_size=2),
    ),
    max_leaves=6,
)
FIELD_ORDER = ["ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash", "Extra"]
# The service's fields in its order, ArchiveId first: where a span is cut.
ARCHIVE = st.fixed_dictionaries(
    {
        "ArchiveId": st.one_of(TEXT, NUMBER),
        "ArchiveDescription": st.one_of(TEXT, VALUE),
        "CreationDate": st.one_of(TEXT, SCALAR),
        "Size": NUMBER,
        "SHA256TreeHash": TEXT,
    },
    optional={"Extra": VALUE},
).map(lambda fields: {key: fields[key] for key in sorted(fields, key=FIELD_ORDER.index)})
ITEM = st.one_of(ARCHIVE, ARCHIVE, ARCHIVE, SCALAR)


def archive_first(drawn: tuple[Any, list[Any]]) -> list[Any]:
    return [drawn[0], *drawn[1]]


@contextlib.contextmanager
def orjson_calls() -> Iterator[list[int]]:
    """The sizes of what ``_batches`` hands orjson meanwhile."""
    loads = inventoryfile._loads
    assert loads is not None
    sizes: list[int] = []

    def counted(data: bytes) -> Any:
        sizes.append(len(data))
        return loads(data)

    with mock.patch.object(inventoryfile, "_loads", counted):
        yield sizes


def read(batches: Any) -> tuple[list[Any], bool]:
    """The items read, and whether the document was refused (what a refused
    document gave before is never staged: see staging's savepoints)."""
    items: list[Any] = []
    try:
        for batch in batches:
            items.extend(batch)
    except errors.InvalidRequest:
        return [], True
    return items, False


SERVICE = '{"VaultARN":"arn:aws:glacier:us-east-1:1:vaults/v","InventoryDate":"2026-01-01T00:00:00Z","ArchiveList":%s}'
# The service's layout, and documents that open otherwise, where ijson's
# answer is not the archives of a list that orjson could be handed.
FRAMES = [
    SERVICE,
    '{"ArchiveList":%s}',
    ' {\n "VaultARN" : "v" ,\n "ArchiveList" : %s }\n',
    '{"InventoryDate":5,"ArchiveList":%s}',
    '{"VaultARN":"a\\"b","ArchiveList":%s}',
    '{"VaultARN":"a\tb","ArchiveList":%s}',
    '{"Wrapped":{"ArchiveList":%s}}',
    '{"ArchiveList":"x","ArchiveList":%s}',
    '{"ArchiveList":%s,"VaultARN":"v"}',
    "%s",
]


def document(items: list[Any], ascii_only: bool, frame: str = SERVICE) -> bytes:
    """``items`` as ArchiveList, compact, in ``frame``."""
    text = frame % json.dumps(items, separators=(",", ":"), ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped: bytes that are not UTF-8


@settings(max_examples=400, deadline=None)
@given(
    items=st.one_of(st.lists(ITEM, max_size=12), st.tuples(ARCHIVE, st.lists(ITEM, max_size=11)).map(archive_first)),
    ascii_only=st.booleans(),
    frame=st.one_of(st.just(SERVICE), st.sampled_from(FRAMES)),
    span=st.integers(120, 3000),  # from the length of the service's opening
    cut=st.one_of(st.none(), st.none(), st.integers(0, 4000)),
    garbage=st.one_of(st.just(""), st.sampled_from([" \n", "x", "]", "}", "\x0b"])),
)
def test_spans_read_by_orjson_give_what_ijson_gives(
    items: list[Any], ascii_only: bool, frame: str, span: int, cut: int | None, garbage: str
) -> None:
    data = document(items, ascii_only, frame)
    if cut is not None:
        data = data[:cut]  # ends in the middle
    data += garbage.encode()
    expected = read(inventoryfile._ijson_batches(io.BytesIO(data), DOCUMENT, 64, 3))
    with orjson_calls() as calls:
        assert read(inventoryfile._batches(io.BytesIO(data), DOCUMENT, 3, span)) == expected
    event("spans handed to orjson" if calls else "read by ijson alone")


@settings(max_examples=300, deadline=None)
@given(items=st.lists(ARCHIVE, min_size=1, max_size=12), ascii_only=st.booleans(), span=st.integers(16, 600))
def test_documents_as_the_service_lays_them_out_are_read_by_orjson(
    items: list[Any], ascii_only: bool, span: int
) -> None:
    """Whatever the archives hold: the span at least as long as the opening and
    an archive, so that the first holds a place to cut (or the whole document)."""
    data = document(items, ascii_only)
    longest = max(len(document([item], ascii_only, "%s")) for item in items)
    span = max(span, len(SERVICE) + longest + len('{"ArchiveId":'))
    expected = read(inventoryfile._ijson_batches(io.BytesIO(data), DOCUMENT, 64, 3))
    with orjson_calls() as calls:
        assert read(inventoryfile._batches(io.BytesIO(data), DOCUMENT, 3, span)) == expected
    assert calls  # the first span at least, whether orjson takes it or not


PLAIN = [
    {"ArchiveId": f"id{index}", "ArchiveDescription": f"file {index}", "CreationDate": "", "Size": index}
    for index in range(12)
]


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("garbage", ["", "\n", "}", "\x0b"])
def test_documents_laid_out_otherwise_give_what_ijson_gives(frame: str, garbage: str) -> None:
    """Spans of a few archives each: what a document opens and closes with decides."""
    data = document(PLAIN, True, frame) + garbage.encode()
    expected = read(inventoryfile._ijson_batches(io.BytesIO(data), DOCUMENT, 64, 5))
    assert read(inventoryfile._batches(io.BytesIO(data), DOCUMENT, 5, 200)) == expected
    assert read(inventoryfile._batches(Trickle(data), DOCUMENT, 5, 200)) == expected


class Trickle(io.RawIOBase):
    """A few bytes a read, as a file still being downloaded gives them."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._reads += 1
        count = min(len(buffer), 1 + self._reads % 7, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


@settings(max_examples=150, deadline=None)
@given(items=st.lists(ARCHIVE, min_size=2, max_size=12), ascii_only=st.booleans(), span=st.integers(16, 600))
def test_runs_read_by_orjson_give_what_ijson_gives(items: list[Any], ascii_only: bool, span: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inventory.json"
        path.write_bytes(document(items, ascii_only))
        runs = inventoryfile.split(path, 2)
        event("cut in runs" if runs else "not cut")  # cut inside a description that holds an archive's look-alike
        for start, stop in runs or []:
            with inventoryfile._Run(path, start, stop) as run:
                expected = read(inventoryfile._ijson_batches(run, "item", 64, 3))
            with inventoryfile._Run(path, start, stop) as run, orjson_calls() as calls:
                assert read(inventoryfile._batches(run, "item", 3, span)) == expected
            event("a run handed to orjson" if calls else "a run read by ijson alone")


def test_a_large_inventory_is_read_by_orjson_and_the_rest_by_ijson(tmp_path: Path) -> None:
    """Thousands of archives in spans of 256 KiB, then one that orjson refuses (a
    lone surrogate): what follows it is read by ijson, which gives it as "?"."""
    archives = [
        {"ArchiveId": f"id{index}", "ArchiveDescription": f"f{index}", "CreationDate": "", "Size": index}
        for index in range(30_000)
    ]
    archives[25_000]["ArchiveDescription"] = "\ud800"
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"VaultARN": "arn", "ArchiveList": archives}, separators=(",", ":")))
    with orjson_calls() as spans:
        read_back = [item for batch in inventoryfile.iter_batches(path, 500) for item in batch]
    assert len(spans) >= 2 and max(spans) <= inventoryfile.FAST_SPAN + 2  # whole spans, bounded
    assert read_back[25_000]["ArchiveDescription"] == "?"
    archives[25_000]["ArchiveDescription"] = "?"
    assert read_back == archives


@pytest.mark.parametrize("size", [2**63, 2**64 - 1, 2**64, -(2**63)])
def test_a_size_beyond_64_bits_counts_as_zero_bytes(tmp_path: Path, size: int) -> None:
    """yajl refuses such a number (beyond +-(2^63 - 1)); orjson reads it (as an
    integer up to 2^64 - 1 and from -2^63, as a float beyond): the archive is
    kept, its size 0."""
    from glacierfs import reconcile

    inventory = tmp_path / "big.json"
    items = [
        {"ArchiveId": "big", "ArchiveDescription": "big.bin", "CreationDate": "", "Size": size, "SHA256TreeHash": "h"},
        {"ArchiveId": "ok", "ArchiveDescription": "ok.bin", "CreationDate": "", "Size": 7, "SHA256TreeHash": "h"},
    ]
    inventory.write_text(json.dumps({"ArchiveList": items}, separators=(",", ":")))
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    outcome = reconcile.reconcile(catalog.path, "v", inventory, time.time())
    assert (outcome.listed, outcome.added) == (2, 2)
    assert {e.path: e.size for e in catalog.entries("v") if e.archive_id} == {"big.bin": 0, "ok.bin": 7}
