"""An inventory document of any size, written to a file a page of archives at a time.

``inventory.inventory_body`` words the document (JSON or CSV, as the service
does); a seeded vault of millions of archives must not be worded in one piece.
Each page is worded alone and only its archives are kept: the part between
what an empty document starts and ends with. So the wording stays in one
place, and memory holds one page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

PAGE = 10_000  # archives worded at a time

Render = Callable[[str, float, Sequence[Any], str], bytes]


def write_inventory(
    path: Path, vault_arn: str, as_of: float, pages: Iterable[list[Any]], output_format: str, render: Render
) -> int:
    """Write the inventory of ``pages`` (lists of archive rows) to ``path``; its size in bytes."""
    empty = render(vault_arn, as_of, [], output_format)
    head, tail = _split(empty, render(vault_arn, as_of, [_PROBE], output_format))
    separator = b"," if output_format != "CSV" else b""
    size = 0
    with open(path, "wb") as out:
        size += out.write(head)
        first = True
        for page in pages:
            if not page:
                continue
            body = render(vault_arn, as_of, page, output_format)
            if not (body.startswith(head) and body.endswith(tail)):
                raise AssertionError("inventory_body worded a page unlike the whole document")
            if not first:
                size += out.write(separator)
            size += out.write(body[len(head) : len(body) - len(tail)])
            first = False
        size += out.write(tail)
    return size


_PROBE = {"id": "probe", "description": "", "created": 0.0, "size": 1, "tree_hash": "00"}  # one archive row


def _split(empty: bytes, one: bytes) -> tuple[bytes, bytes]:
    """What the document of no archives starts and ends with, around where archives go."""
    common = 0
    while common < min(len(empty), len(one)) and empty[common] == one[common]:
        common += 1
    # The archives' place is after the longest common start, and the rest of the empty document follows.
    return empty[:common], empty[common:]
