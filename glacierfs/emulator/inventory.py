"""The inventory a vault's inventory job serves: which archives (a range of it), as JSON or CSV.

Which archives an inventory can list at all (those alive at its date) is the job
output's business; here is what InventoryRetrievalParameters make of them
(archives created in [StartDate, EndDate), at most Limit of them, from Marker
on, with the marker of the rest) and how the document is worded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .rules import invalid, iso, parse_date

COLUMNS = ("ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash")


@dataclass(frozen=True)
class InventoryRange:
    """InventoryRetrievalParameters as given to InitiateJob (strings, as the API takes them)."""

    start_date: str | None = None
    end_date: str | None = None
    limit: str | None = None
    marker: str | None = None

    @classmethod
    def from_params(cls, params: Any) -> InventoryRange:
        if params is None:
            return cls()
        if not isinstance(params, dict):
            raise invalid("Invalid InventoryRetrievalParameters: a JSON object")
        wanted = cls(
            **{
                field: None if params.get(key) is None else str(params[key])
                for field, key in (
                    ("start_date", "StartDate"),
                    ("end_date", "EndDate"),
                    ("limit", "Limit"),
                    ("marker", "Marker"),
                )
            }
        )
        wanted.bounds()  # refuse bad dates now, not when the job completes
        if wanted.limit is not None and (not wanted.limit.isdigit() or int(wanted.limit) < 1):
            raise invalid(f"Invalid Limit: {wanted.limit!r} (a whole number of at least 1)")
        if wanted.marker is not None:
            decode_marker(wanted.marker)
        return wanted

    @classmethod
    def from_json(cls, text: str | None) -> InventoryRange:
        return cls(**json.loads(text)) if text else cls()

    def to_json(self) -> str:
        return json.dumps(vars(self))

    def bounds(self) -> tuple[float | None, float | None]:
        start = parse_date(self.start_date, "StartDate") if self.start_date is not None else None
        end = parse_date(self.end_date, "EndDate") if self.end_date is not None else None
        if start is not None and end is not None and start >= end:
            raise invalid(f"Invalid date range: StartDate {self.start_date} is not before EndDate {self.end_date}")
        return start, end

    def select(self, rows: Sequence[Any]) -> tuple[list[Any], str | None]:
        """The rows (ordered by creation, then id) this range lists, and the marker of the rest, if any."""
        start, end = self.bounds()
        chosen = [
            row for row in rows if (start is None or row["created"] >= start) and (end is None or row["created"] < end)
        ]
        if self.marker is not None:
            position = decode_marker(self.marker)
            chosen = [row for row in chosen if (row["created"], row["id"]) >= position]
        if self.limit is not None and len(chosen) > int(self.limit):
            rest = chosen[int(self.limit)]
            return chosen[: int(self.limit)], encode_marker(rest["created"], rest["id"])
        return chosen, None


def encode_marker(created: float, archive_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, archive_id]).encode()).decode()


def decode_marker(marker: str) -> tuple[float, str]:
    try:
        created, archive_id = json.loads(base64.urlsafe_b64decode(marker.encode()))
        return float(created), str(archive_id)
    except (ValueError, TypeError):
        raise invalid(f"Invalid Marker: {marker!r}") from None


def _csv_field(value: object) -> str:
    """A field as the reference's CSV inventories quote it: in double quotes, with ``\\"`` inside."""
    text = str(value)
    if not any(char in text for char in ',"\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def inventory_body(vault_arn: str, as_of: float, rows: Sequence[Any], output_format: str) -> bytes:
    """Rows of ``archives`` (id, description, created, size, tree_hash), as Glacier words them."""
    records = [(r["id"], r["description"], iso(r["created"]), r["size"], r["tree_hash"]) for r in rows]
    if output_format == "CSV":
        lines = [",".join(COLUMNS)] + [",".join(_csv_field(value) for value in record) for record in records]
        return ("\n".join(lines) + "\n").encode()
    inventory = {
        "VaultARN": vault_arn,
        "InventoryDate": iso(as_of),
        "ArchiveList": [dict(zip(COLUMNS, record, strict=True)) for record in records],
    }
    return json.dumps(inventory, separators=(",", ":")).encode()
