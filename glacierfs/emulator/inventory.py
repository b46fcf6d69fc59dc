"""The inventory document a vault's inventory job serves, as JSON or CSV.

Only the format lives here: which archives an inventory lists (those alive at
its date) is the job output's business.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from .rules import iso


def inventory_body(vault_arn: str, as_of: float, rows: Iterable[Any], output_format: str) -> bytes:
    """Rows of ``archives`` (id, description, created, size, tree_hash), as Glacier words them."""
    if output_format == "CSV":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash"])
        for r in rows:
            writer.writerow([r["id"], r["description"], iso(r["created"]), r["size"], r["tree_hash"]])
        return text.getvalue().encode()
    inventory = {
        "VaultARN": vault_arn,
        "InventoryDate": iso(as_of),
        "ArchiveList": [
            {
                "ArchiveId": r["id"],
                "ArchiveDescription": r["description"],
                "CreationDate": iso(r["created"]),
                "Size": r["size"],
                "SHA256TreeHash": r["tree_hash"],
            }
            for r in rows
        ],
    }
    return json.dumps(inventory, separators=(",", ":")).encode()
