"""Archive descriptions: the only place Glacier keeps a name.

glacierfs writes FastGlacier's v4 format, which AWS's own vault-to-S3 migration
solution parses first and QNAP HBS, CrushFTP and others write too:
``<m><v>4</v><p>BASE64(UTF-8 path)</p><lm>YYYYMMDDTHHMMSSZ</lm></m>``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timezone

MAX_DESCRIPTION = 1024
_MTIME_FORMAT = "%Y%m%dT%H%M%SZ"
_FASTGLACIER_V4 = re.compile(
    r"<m><v>(?P<v>[34])</v><p>(?P<p>[A-Za-z0-9+/=]*)</p><lm>(?P<lm>\d{8}T\d{6}Z)</lm>"
    r"(?:<ce>[^<]*</ce>)?</m>"
)
# rsync writes into ".NAME.XXXXXX" and renames it to NAME once complete.
_RSYNC_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class Decoded:
    path: str
    mtime: float | None  # seconds since the epoch, when the description records one


def format_mtime(mtime: float) -> str:
    return datetime.fromtimestamp(int(mtime), timezone.utc).strftime(_MTIME_FORMAT)


def parse_mtime(text: str) -> float | None:
    try:
        return datetime.strptime(text, _MTIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def encode(path: str, mtime: float) -> str:
    """FastGlacier v4 description of ``path`` (relative to its vault)."""
    encoded = base64.b64encode(path.encode("utf-8", "surrogateescape")).decode("ascii")
    return f"<m><v>4</v><p>{encoded}</p><lm>{format_mtime(mtime)}</lm></m>"


def fits(path: str) -> bool:
    """Whether ``path`` fits the service's 1,024-character description."""
    return len(encode(path, 0)) <= MAX_DESCRIPTION


def decode(description: str) -> Decoded | None:
    """The path and mtime a description records, or None if it names nothing."""
    match = _FASTGLACIER_V4.fullmatch(description.strip())
    if match:
        try:
            path = base64.b64decode(match["p"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Decoded(path, parse_mtime(match["lm"]))
    return None


def likely_final_name(name: str) -> str:
    """The name a temporary file will be renamed to (rsync's ".NAME.XXXXXX"), else ``name``.

    Archive descriptions are immutable, so the name recorded at upload should be
    the one the file ends up with.
    """
    match = _RSYNC_TEMPORARY.match(name)
    return match["name"] if match else name
