"""The two ways glacierfs writes a time, and the one way it reads Glacier's.

Everything is UTC. ``iso`` is Glacier's own form (CreationDate, InventoryDate)
and what the xattrs show; ``compact`` is the form that fits in a name: the
mtime in FastGlacier descriptions, manifest names, and the suffix of a
displaced duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
COMPACT_FORMAT = "%Y%m%dT%H%M%SZ"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(ISO_FORMAT)


def compact(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime(COMPACT_FORMAT)


def parse_iso(text: str) -> float | None:
    """Glacier's ISO 8601 dates, with or without milliseconds; None when ``text``
    is not one, so each caller says what a missing date means to it."""
    cleaned = text.strip().removesuffix("Z").split(".")[0]
    try:
        if len(cleaned) == 19 and cleaned[4] == cleaned[7] == "-" and cleaned[10] == "T":
            # fromisoformat is C and five times strptime's speed: inventories call this per archive.
            return datetime.fromisoformat(cleaned).replace(tzinfo=UTC).timestamp()
        return datetime.strptime(cleaned, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def parse_compact(text: str) -> float | None:
    try:
        if len(text) == 16 and text[8] == "T" and text[15] == "Z" and text[:8].isdigit():
            return datetime.fromisoformat(text).timestamp()  # the same form, at C speed
        return datetime.strptime(text, COMPACT_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class Midnights(dict[str, float | None]):
    """A day's text -> that day's 00:00:00 UTC by ``parse``, or None if no such
    day; each worked out once when first asked, a few thousand kept. A batch of
    an inventory of millions holds few distinct days: their dates are a
    midnight looked up plus the time of day."""

    def __init__(self, parse: Callable[[str], float | None]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, day: str) -> float | None:
        if len(self) > 4096:
            self.clear()
        midnight = self[day] = self._parse(day) if day else None
        return midnight
