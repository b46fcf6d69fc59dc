"""Reading an inventory document as the service sends it, JSON or CSV, as a stream.

A vault of 7 million archives has an inventory of 2.8 GB: it is never held in
memory. JSON goes through ijson's yajl2_c backend, C speed and constant memory
(faster than a ``json.load`` of the same file, measured in scripts/bench_list.py).
Where that backend is missing, an incremental parser on the standard library
takes over, about half as fast, and the log says so once. The archives of a
document laid out as the service lays it out are parsed by orjson instead,
256 KiB of them at a time, cut where one ends and the next begins: in less
than half of ijson's time (``_batches``); what orjson refuses is left to ijson.

CSV is what another client may have asked for (``Format: CSV``): a header, then
ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash. The service puts
the description in double quotes and escapes a quote inside it as ``\\"``, but
leaves backslashes alone, so a description ending in a backslash reads like an
escaped quote. Only the description can hold a comma or a quote (ids are
base64url, dates, sizes and hashes are plain), so a line is cut at its first
comma(s) and its last ones, and what remains between is the description.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from glacierfs import errors

log = logging.getLogger(__name__)

JSON = "JSON"
CSV = "CSV"
CSV_COLUMNS = ("ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash")
BLOCK = 1 << 16

try:
    import ijson

    _ijson: Any = ijson.get_backend("yajl2_c")
    _Incomplete: type[Exception] = ijson.IncompleteJSONError
    # yajl hands ijson a lone low surrogate ("\udc80") as bytes that are not UTF-8.
    _Invalid: tuple[type[Exception], ...] = (ijson.JSONError, UnicodeDecodeError)
except ImportError:  # ijson absent, or built without its C backend
    _ijson = None
try:
    import orjson

    _loads: Callable[[bytes], Any] | None = orjson.loads
except ImportError:
    _loads = None
_warned_slow = False


@dataclass(frozen=True)
class Header:
    """What an inventory says about itself before its list of archives."""

    format: str  # JSON or CSV
    vault_arn: str | None  # JSON only
    date: str | None  # InventoryDate as written (JSON only)


def sniff_format(path: Path) -> str:
    """JSON or CSV, by the document's first character: the job's own Format may be absent."""
    with open(path, "rb") as handle:
        return _format_of(handle.read(256)) or CSV


def _format_of(head: bytes) -> str | None:
    """JSON or CSV by the first character after a byte order mark and blank space;
    None while ``head`` holds nothing else."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start:
        return None
    return JSON if start.startswith(b"{") else CSV


def read_header(path: Path) -> Header:
    """VaultARN and InventoryDate, which the service writes before ArchiveList."""
    kind = sniff_format(path)
    if kind == CSV:
        return Header(CSV, None, None)
    fields: dict[str, str] = {}
    if _ijson is not None:
        with open(path, "rb") as handle:
            try:
                for prefix, event, value in _ijson.parse(handle, buf_size=BLOCK):
                    if prefix == "ArchiveList" or len(fields) == 2:
                        break
                    if event == "string" and prefix in ("VaultARN", "InventoryDate"):
                        fields[prefix] = value
            except _Invalid as error:
                raise errors.InvalidRequest(f"the inventory is not valid JSON: {error}") from error
    else:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(BLOCK)
        for key in ("VaultARN", "InventoryDate"):
            match = re.search(rf'"{key}"\s*:\s*"((?:[^"\\]|\\.)*)"', head.partition('"ArchiveList"')[0])
            if match:
                fields[key] = json.loads(f'"{match[1]}"')
    return Header(JSON, fields.get("VaultARN"), fields.get("InventoryDate"))


def count_archives(path: Path) -> int:
    """How many archives the document lists, at the speed of reading it: for the
    progress shown while it is applied."""
    counter = ArchiveCounter()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            counter.feed(block)
    return counter.total


class ArchiveCounter:
    """Counts the archives of a document fed to it a piece at a time (as it is
    downloaded, so the file need not be read again). In JSON the byte string
    ``"ArchiveId"`` can only be a key (a quote inside a string value is
    escaped), in CSV each archive is one line after the header."""

    def __init__(self) -> None:
        self._needle: bytes | None = None  # known from the document's first bytes
        self._head = b""
        self._count = 0
        self._tail = b""
        self._last = b""

    def feed(self, block: bytes) -> None:
        if not block:
            return
        if self._needle is None:
            self._head += block[:256]
            kind = _format_of(self._head)
            if kind is None:  # nothing but blank space so far: nothing to count in it
                return
            self._needle = b'"ArchiveId"' if kind == JSON else b"\n"
        keep = len(self._needle) - 1
        # One across the seam between the last piece and this one, then this one's own.
        self._count += (self._tail + block[:keep]).count(self._needle) + block.count(self._needle)
        self._tail = (self._tail + block)[-keep:] if keep and len(block) < keep else block[-keep:] if keep else b""
        self._last = block[-1:]

    @property
    def total(self) -> int:
        if self._needle == b"\n":  # the header; a last line without newline
            return max(self._count - 1 + (1 if self._last not in (b"\n", b"") else 0), 0)
        return self._count


def iter_archives(path: Path, block: int = BLOCK) -> Iterator[dict[str, Any]]:
    """Each archive of the inventory (JSON or CSV) as the service's JSON names it;
    anything in ArchiveList that is not an object is skipped."""
    if sniff_format(path) == CSV:
        yield from _csv_archives(path)
        return
    with open(path, "rb") as handle:
        if _ijson is not None:
            yield from _ijson_archives(handle, block)
        else:
            _warn_slow()
            yield from _stdlib_archives(path, block)


# Where one archive of the service's (compact) JSON ends and the next begins. A
# quote inside a string value is escaped, so these bytes never occur in one.
_BETWEEN = b'},{"ArchiveId":'


def split(path: Path, parts: int) -> list[tuple[int, int]] | None:
    """Byte ranges [start, stop) of ``parts`` runs of whole archives of a JSON
    inventory, each readable by ``iter_range_batches``: cut where one archive
    ends and the next begins. None for a document that cannot be cut so (CSV, or
    not laid out as the service lays it out)."""
    if parts < 2 or _ijson is None or sniff_format(path) != JSON:
        return None
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(BLOCK)
        marker = head.find(b'"ArchiveList":[')
        handle.seek(max(0, size - 64))
        tail = handle.read().rstrip()
        if marker < 0 or not tail.endswith(b"]}"):
            return None
        start, stop = marker + len(b'"ArchiveList":['), size - (len(tail) - len(tail.rstrip(b"}").rstrip()) + 1)
        if stop <= start:
            return None
        cuts = [start]
        for part in range(1, parts):
            cut = _next_archive(
                lambda position, count: os.pread(handle.fileno(), count, position),
                max(cuts[-1], start + (stop - start) * part // parts),
                size,
            )
            if cut is None or cut >= stop:
                return None
            cuts.append(cut)
    ends = [cut - 1 for cut in cuts[1:]] + [stop]  # each run stops before the ',' that follows it
    return list(zip(cuts, ends, strict=True))


def _next_archive(read: Callable[[int, int], bytes], position: int, end: int) -> int | None:
    """Where the first archive that starts at or after ``position`` (and before
    ``end``) starts, its '{', in the service's layout; None if none does.
    ``read(position, count)`` gives up to ``count`` bytes there (none: the file
    ends)."""
    window = b""
    while position < end:
        block = read(position, min(1 << 20, end - position))
        if not block:
            return None
        window = window[-len(_BETWEEN) :] + block
        position += len(block)
        found = window.find(_BETWEEN)
        if found >= 0:
            return position - len(window) + found + 2  # the '{' after "},"
    return None


class NotPlain(Exception):
    """The document is not laid out as the service lays it out: read it with ijson."""


_ID_KEY = b'"ArchiveId"'
_ID = re.compile(rb'"ArchiveId":"([^"]*)')  # the service's compact layout; a backslash is refused below


def iter_ids(path: Path, block: int = 1 << 20) -> Iterator[list[str]]:
    """The archive ids of a JSON inventory, a block at a time, found by one
    regular expression (C code, no Python step per archive, no parse of the
    rest): what a second inventory needs of the archives the catalog knows.
    NotPlain, once the caller has taken some, for a document where that is not
    exact: an ArchiveId that is not a plain string (empty, escaped, not ASCII,
    not a string at all)."""
    with open(path, "rb") as handle:
        tail = b""
        while True:
            data = handle.read(block)
            end = not data
            data = tail + data
            cut = len(data) if end else data.rfind(_ID_KEY)
            if cut <= 0:
                tail = data
                if end:
                    return
                continue
            part, tail = data[:cut], data[cut:]
            found = _ID.findall(part)
            if len(found) != part.count(_ID_KEY):
                raise NotPlain("an ArchiveId that is not a plain string")
            if found:
                joined = b"\n".join(found)
                plain = joined.isascii() and joined.count(b"\n") == len(found) - 1
                if not plain or b"\\" in joined or b"" in found:
                    raise NotPlain("an ArchiveId that is empty, escaped or not ASCII")
                yield joined.decode("ascii").split("\n")
            if end:
                return


class _Framed(io.RawIOBase):
    """Part of an inventory file, read by ijson as a JSON document of its own."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed with this object

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()
        super().close()


class _Run(_Framed):
    """Bytes [start, stop) of a file, framed as a JSON array: ``[`` ... ``]``."""

    def __init__(self, path: Path, start: int, stop: int) -> None:
        super().__init__(path)
        self._file.seek(start)
        self._left = stop - start
        self._pending = b"["
        self._closed_array = False

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer)
        if not wanted:
            return 0
        data = self._pending
        self._pending = b""
        if len(data) < wanted and self._left > 0:
            more = self._file.read(min(wanted - len(data), self._left))
            self._left -= len(more)
            data += more
            if not more:
                self._left = 0
        if len(data) < wanted and self._left <= 0 and not self._closed_array:
            data += b"]"
            self._closed_array = True
        buffer[: len(data)] = data
        return len(data)


class _GrowingHalf(_Framed):
    """Half of a JSON inventory that is still being downloaded to ``size`` bytes,
    framed as a document of its own: its bytes are read as they arrive. The
    halves are cut where one archive ends and the next begins (as ``split``
    cuts), at the first such place from byte ``middle`` on, which both halves
    find alike. The first half is the file up to there, closed with ``]}``; the
    second is opened with ``{"ArchiveList":[`` and runs to the end. NotPlain
    when the file is not a JSON document cut so."""

    def __init__(
        self, path: Path, size: int, half: int, middle: int, wanted: Callable[[], bool], patience: float
    ) -> None:
        super().__init__(path)
        self._size = size
        self._wanted = wanted
        self._patience = patience
        if _format_of(self._wait_for(0, min(size, 256))) != JSON:
            self._file.close()
            raise NotPlain("not a JSON document")
        self._middle = middle
        self._stop: int | None  # the end of this half's bytes: for the first, known once the cut is found
        if half == 0:
            self._position, self._stop, self._pending, self._closing = 0, None, b"", b"]}"
        else:
            self._position, self._stop, self._pending, self._closing = self._cut(), size, b'{"ArchiveList":[', b""

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer)
        if not wanted:
            return 0
        if not self._pending:
            limit = self._middle if self._stop is None else self._stop
            if self._position >= limit and self._stop is None:
                self._stop = self._cut() - 1  # the first half stops before the ',' between the two
                limit = self._stop
            if self._position < limit:
                self._pending = self._wait_for(self._position, min(wanted, limit - self._position))
                self._position += len(self._pending)
            else:
                self._pending, self._closing = self._closing, b""
        data, self._pending = self._pending[:wanted], self._pending[wanted:]
        buffer[: len(data)] = data
        return len(data)

    def _wait_for(self, position: int, count: int) -> bytes:
        """Up to ``count`` bytes at ``position`` (at least one), once they are there."""
        idle = 0.0
        while True:
            data = os.pread(self._file.fileno(), count, position)
            if data or not count:
                return data
            if idle > self._patience or not self._wanted():
                raise errors.InvalidRequest(f"the inventory stopped growing at {position} of {self._size} bytes")
            time.sleep(0.005)
            idle += 0.005

    def _cut(self) -> int:
        """Where the second half starts: the '{' of the first archive that starts at
        or after ``middle``."""
        cut = _next_archive(self._wait_for, self._middle, self._size)
        if cut is None:
            raise NotPlain("no place to cut it in halves")
        return cut


def iter_growing_half(
    path: Path,
    size: int,
    half: int,
    middle: int,
    batch: int,
    wanted: Callable[[], bool],
    patience: float = 600.0,
) -> Iterator[list[Any]]:
    """``iter_batches`` of half ``half`` (0 or 1) of a JSON inventory that is being
    downloaded to ``size`` bytes, read as it arrives, the halves cut from byte
    ``middle`` on (see ``_GrowingHalf``). ``wanted()`` says whether to keep
    waiting for bytes; InvalidRequest after ``patience`` seconds without any."""
    with _GrowingHalf(path, size, half, middle, wanted, patience) as run:
        yield from _batches(run, "ArchiveList.item", batch)


def iter_batches(path: Path, size: int, block: int = BLOCK) -> Iterator[list[Any]]:
    """What ``iter_archives`` yields, ``size`` at a time, except that a JSON batch
    may hold items of ArchiveList that are not objects (the caller skips them):
    ijson's items go into each list straight from its C code, with no Python
    step per archive."""
    if _ijson is None or sniff_format(path) == CSV:
        yield from batched(iter_archives(path, block), size)
        return
    with open(path, "rb") as handle:
        yield from _batches(handle, "ArchiveList.item", size)


def iter_range_batches(path: Path, start: int, stop: int, size: int) -> Iterator[list[Any]]:
    """``iter_batches`` of one run of ``split``."""
    with _Run(path, start, stop) as run:
        yield from _batches(run, "item", size)


def batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(items, size)):
        yield batch


# What comes before the first archive in the service's layout, and after the
# last: of a run (see split), and of the document, whose fields before
# ArchiveList are strings of printable ASCII without escapes.
_OPENING = {
    "item": re.compile(rb"\[[ \t\n\r]*"),
    "ArchiveList.item": re.compile(
        rb'[ \t\n\r]*\{[ \t\n\r]*(?:"[A-Za-z]+"[ \t\n\r]*:[ \t\n\r]*"[ !#-\[\]-~]*"[ \t\n\r]*,[ \t\n\r]*)*'
        rb'"ArchiveList"[ \t\n\r]*:[ \t\n\r]*\[[ \t\n\r]*'
    ),
}
_CLOSING = {"item": b"]", "ArchiveList.item": b"]}"}
_JSON_SPACE = b" \t\n\r"
_FIRST = _BETWEEN[2:]  # where an archive starts
# The bytes of archives orjson parses at a time. Half a million archives took
# 0.28 s of CPU so and 0.58 s in spans of 1 MiB (the garbage collector walks
# the span's new objects while they pile up), the process 17 MiB instead of 26.
FAST_SPAN = 1 << 18


def _batches(source: BinaryIO | io.RawIOBase, prefix: str, size: int, span: int = FAST_SPAN) -> Iterator[list[Any]]:
    """What ``_ijson_batches`` yields of ``source`` (whose archives are at
    ``prefix``: "item" of a run, "ArchiveList.item" of a document), the
    archives parsed by orjson a span at a time where the document is laid out
    as the service lays it out: the span cut before a ``{"ArchiveId":`` that
    follows a ``},`` (never inside a string, where a quote is escaped), which
    is between two archives if orjson takes the span as a list. What orjson
    refuses is read by ijson, from that span on: ijson's answers and errors.
    orjson reads alike what both read, and reads one thing yajl refuses: an
    integer beyond +-(2^63 - 1) (a size so large counts as 0, as any size
    that is not a count of bytes does: staging._listed_row)."""
    rest, ended = _read_up_to(source, b"", span)
    first = rest.find(_FIRST)
    if _loads is None or first < 0 or not _OPENING[prefix].fullmatch(rest, 0, first):
        yield from _ijson_batches(_Replayed(rest, source), prefix, BLOCK, size)
        return
    opening, closing, rest = rest[:first], _CLOSING[prefix], rest[first:]
    left: list[Any] = []  # the archives of the spans so far that did not fill a batch
    while True:
        if not ended:
            rest, ended = _read_up_to(source, rest, span)
        if ended:
            body = rest.rstrip(_JSON_SPACE)
            archives = body[: -len(closing)] if body.endswith(closing) else None
        else:
            cut = rest.rfind(_BETWEEN)
            archives = rest[: cut + 1] if cut > 0 else None
        try:
            if archives is None:
                raise ValueError("not laid out as the service lays it out")
            items = left + _loads(b"[" + archives + b"]")
        except ValueError:  # orjson.JSONDecodeError among them
            if left:
                yield left
            yield from _ijson_batches(_Replayed(opening + rest, source), prefix, BLOCK, size)
            return
        # Whole batches, as ijson's: each size of a batch is a statement SQLite prepares.
        whole = len(items) if ended else len(items) - len(items) % size
        for start in range(0, whole, size):
            yield items[start : start + size]
        if ended:
            return
        left = items[whole:]
        del items  # before the next span's are made
        rest = rest[len(archives) + 1 :]  # after the ',' between


def _read_up_to(source: BinaryIO | io.RawIOBase, data: bytes, count: int) -> tuple[bytes, bool]:
    """``data`` and what follows it in ``source``, up to ``count`` bytes; and
    whether ``source`` ended."""
    parts = [data]
    held = len(data)
    while held < count:
        more = source.read(count - held)
        if not more:
            return b"".join(parts), True
        parts.append(more)
        held += len(more)
    return b"".join(parts), False


class _Replayed(io.RawIOBase):
    """``data``, then what is left of ``source``: for ijson to read from where
    ``_batches`` stopped."""

    def __init__(self, data: bytes, source: BinaryIO | io.RawIOBase) -> None:
        self._data = memoryview(data)
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data:
            self._data = memoryview(self._source.read(len(buffer)) or b"")
        count = min(len(buffer), len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def _ijson_batches(source: BinaryIO | io.RawIOBase, prefix: str, block: int, size: int) -> Iterator[list[Any]]:
    try:
        yield from batched(_ijson.items(source, prefix, use_float=True, buf_size=block), size)
    except _Incomplete as error:
        raise errors.InvalidRequest(f"the inventory ends in the middle of an archive: {error}") from error
    except _Invalid as error:
        raise errors.InvalidRequest(f"the inventory is not valid JSON: {error}") from error


def _warn_slow() -> None:
    global _warned_slow
    if not _warned_slow:
        _warned_slow = True
        log.warning(
            "ijson's C backend (yajl2_c) is not available: inventories are parsed by the "
            "standard library, about half as fast (pip install ijson to restore it)"
        )


def _ijson_archives(handle: BinaryIO, block: int) -> Iterator[dict[str, Any]]:
    return _ijson_items(handle, "ArchiveList.item", block)


def _ijson_items(source: BinaryIO | io.RawIOBase, prefix: str, block: int) -> Iterator[dict[str, Any]]:
    """The objects at ``prefix``, with ijson's errors said in the project's terms."""
    try:
        for item in _ijson.items(source, prefix, use_float=True, buf_size=block):
            if isinstance(item, dict):
                yield item
    except _Incomplete as error:
        raise errors.InvalidRequest(f"the inventory ends in the middle of an archive: {error}") from error
    except _Invalid as error:
        raise errors.InvalidRequest(f"the inventory is not valid JSON: {error}") from error


_SEPARATORS = re.compile(r"[\s,]*")


def _stdlib_archives(path: Path, block: int) -> Iterator[dict[str, Any]]:
    """ArchiveList's objects by ``raw_decode`` at a moving offset: the buffer is cut
    once per block read, never once per archive."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as handle:
        buffer = ""
        while "[" not in buffer.partition('"ArchiveList"')[2]:
            more = handle.read(block)
            if not more:
                return
            buffer += more
        after = buffer.partition('"ArchiveList"')[2]
        buffer = after[after.index("[") + 1 :]
        position = 0
        while True:
            position = _SEPARATORS.match(buffer, position).end()  # type: ignore[union-attr]
            if buffer.startswith("]", position):
                return
            try:
                item, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                more = handle.read(max(block, len(buffer) - position))
                if not more:
                    raise errors.InvalidRequest("the inventory ends in the middle of an archive") from None
                buffer = buffer[position:] + more
                position = 0
                continue
            if isinstance(item, dict):
                yield item
            position = end


def _csv_archives(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = [name.strip().strip('"') for name in handle.readline().lstrip("\ufeff").rstrip("\r\n").split(",")]
        if sorted(header) != sorted(CSV_COLUMNS):
            raise errors.InvalidRequest(f"not a Glacier CSV inventory: its header is {','.join(header)[:200]!r}")
        before = header.index("ArchiveDescription")
        after = len(header) - before - 1
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            head = line.split(",", before) if before else [line]
            rest = head.pop() if before else line
            fields = rest.rsplit(",", after) if after else [rest]
            if len(head) != before or len(fields) != after + 1:
                log.warning("line %d of the CSV inventory has too few fields: skipped", number)
                continue
            description = fields.pop(0)
            values = [field.strip().strip('"') for field in head + fields]
            item: dict[str, Any] = dict(zip([h for h in header if h != "ArchiveDescription"], values, strict=True))
            item["ArchiveDescription"] = _csv_description(description)
            size = item.get("Size", "")
            item["Size"] = int(size) if size.isdigit() else size
            yield item


def _csv_description(field: str) -> str:
    """The description from its CSV field: the service's ``"...\\"..."``, or
    RFC 4180's ``"...""..."`` (whose doubled quote the service never writes)."""
    if len(field) < 2 or not (field.startswith('"') and field.endswith('"')):
        return field
    inner = field[1:-1]
    return inner.replace('""', '"') if '""' in inner else inner.replace('\\"', '"')
