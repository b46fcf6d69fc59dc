"""Archive descriptions: the only place Glacier keeps a name.

glacierfs writes FastGlacier's v4 format, which AWS's own vault-to-S3 migration
solution parses first and QNAP HBS, CrushFTP and others write too:
``<m><v>4</v><p>BASE64(UTF-8 path)</p><lm>YYYYMMDDTHHMMSSZ</lm></m>``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from glacierfs import timestamps
from glacierfs.paths import MAX_COMPONENT

MAX_DESCRIPTION = 1024
_FASTGLACIER_V4 = re.compile(
    r"<m><v>(?P<v>[34])</v><p>(?P<p>[A-Za-z0-9+/=]*)</p><lm>(?P<lm>\d{8}T\d{6}Z)</lm>"
    r"(?:<ce>[^<]*</ce>)?</m>"
)  # v3 is v4 with <ce>c:e:md5</ce>
# rsync writes into ".NAME.XXXXXX" and renames it to NAME once complete.
_RSYNC_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class Decoded:
    path: str
    mtime: float | None  # seconds since the epoch, when the description records one


def encode(path: str, mtime: float) -> str:
    """FastGlacier v4 description of ``path`` (relative to its vault)."""
    encoded = base64.b64encode(path.encode("utf-8", "surrogateescape")).decode("ascii")
    return f"<m><v>4</v><p>{encoded}</p><lm>{timestamps.compact(mtime)}</lm></m>"


def fits(path: str) -> bool:
    """Whether ``path`` fits the service's 1,024-character description."""
    return len(encode(path, 0)) <= MAX_DESCRIPTION


def decode(description: str) -> Decoded | None:
    """The path and mtime a description records, or None if it names nothing.

    Every format in the wild is read; structured ones that fail to parse name
    nothing rather than a garbled path. The path is sanitized: it never leaves
    its vault.
    """
    text = description.strip()
    if not text:
        return None
    for looks_like, parse in _FORMATS:
        if looks_like(text):
            try:
                decoded = parse(text)
            except (ValueError, TypeError, KeyError, UnicodeError, binascii.Error):
                return None
            if decoded is None:
                return None
            path = sanitize(decoded.path)
            return Decoded(path, decoded.mtime) if path else None
    path = sanitize(text)  # glacier-cli, glacier-cmd, by hand: the raw name
    return Decoded(path, None) if path else None


def _fastglacier(text: str) -> Decoded | None:
    match = _FASTGLACIER_V4.fullmatch(text)
    if not match:
        return None
    return Decoded(_b64_text(match["p"]), timestamps.parse_compact(match["lm"]))


def _fastglacier_v1(text: str) -> Decoded | None:
    match = re.search(r"<Path>([A-Za-z0-9+/=\s]*)</Path>", text)
    if not match:
        return None
    mtime = re.search(r"<(?:LastModified|lm)>(\d{8}T\d{6}Z)</", text)
    return Decoded(_b64_text(match[1]), timestamps.parse_compact(mtime[1]) if mtime else None)


def _mt_aws_glacier(text: str) -> Decoded | None:
    version, payload = text.split(" ", 1)
    raw = base64.urlsafe_b64decode(payload.strip() + "=" * (-len(payload.strip()) % 4))
    decoded = raw.decode("utf-8")
    if version == "mt1":  # the JSON was UTF-8 encoded twice
        decoded = decoded.encode("latin-1").decode("utf-8")
    fields = json.loads(decoded)
    if not isinstance(fields, dict) or not isinstance(fields.get("filename"), str):
        return None
    mtime = fields.get("mtime")
    return Decoded(fields["filename"], timestamps.parse_compact(mtime) if isinstance(mtime, str) else None)


def _json_metadata(text: str) -> Decoded | None:
    fields = json.loads(text)
    if not isinstance(fields, dict):
        return None
    if isinstance(fields.get("Path"), str):  # CloudBerry
        modified = fields.get("UTCDateModified")
        return Decoded(fields["Path"], timestamps.parse_compact(modified) if isinstance(modified, str) else None)
    if isinstance(fields.get("path"), str):  # QNAP's Glacier app
        return Decoded(fields["path"], None)
    return None


def _b64_text(value: str) -> str:
    return base64.b64decode("".join(value.split()), validate=True).decode("utf-8")


# Tried in order; the first whose shape matches decides.
_FORMATS = [
    (lambda t: t.startswith("<m>"), _fastglacier),
    (lambda t: t.startswith("<ArchiveMetadata>"), _fastglacier_v1),
    (lambda t: t[:4] in ("mt1 ", "mt2 "), _mt_aws_glacier),
    (lambda t: t.startswith("{"), _json_metadata),
]


def sanitize(path: str) -> str:
    """A safe relative path: backslashes become '/', and '.', '..', empty
    components, NUL and control characters never reach it; components are cut
    to 255 bytes. '' if nothing usable is left."""
    parts = []
    for component in path.replace("\\", "/").split("/"):
        cleaned = "".join(char for char in component if ord(char) >= 0x20 and ord(char) != 0x7F)
        cleaned = cleaned.strip()
        if cleaned in ("", ".", ".."):
            continue
        encoded = cleaned.encode("utf-8", "surrogateescape")
        if len(encoded) > MAX_COMPONENT:
            cleaned = encoded[:MAX_COMPONENT].decode("utf-8", "ignore")
        parts.append(cleaned)
    return "/".join(parts)


def likely_final_name(name: str) -> str:
    """The name a temporary file will be renamed to (rsync's ".NAME.XXXXXX"), else ``name``.

    Archive descriptions are immutable, so the name recorded at upload should be
    the one the file ends up with.
    """
    match = _RSYNC_TEMPORARY.match(name)
    return match["name"] if match else name
