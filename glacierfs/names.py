"""Archive descriptions: the only place Glacier keeps a name.

glacierfs writes FastGlacier's v4 format, which AWS's own vault-to-S3 migration
solution parses first and QNAP HBS, CrushFTP and others write too:
``<m><v>4</v><p>BASE64(UTF-8 path)</p><lm>YYYYMMDDTHHMMSSZ</lm></m>``.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from glacierfs import timestamps
from glacierfs.paths import MAX_COMPONENT

MAX_DESCRIPTION = 1024
_FASTGLACIER_V4 = re.compile(
    r"<m><v>(?P<v>[34])</v><p>(?P<p>[A-Za-z0-9+/=]*)</p><lm>(?P<lm>\d{8}T\d{6}Z)</lm>"
    r"(?:<ce>[^<]*</ce>)?</m>"
)  # v3 is v4 with <ce>c:e:md5</ce>
# rsync writes into ".NAME.XXXXXX" and renames it to NAME once complete.
_RSYNC_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9]{6}$")


class Decoded(NamedTuple):  # a tuple: made once per archive of an inventory, millions of times
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
    its vault. Spaces that are part of a name are kept, and backslashes become
    '/' only in a path that looks like a Windows one (see ``_posix_path``).
    """
    plain = _PLAIN_V4.fullmatch(description)
    if plain is not None:  # glacierfs's own format, and the commonest: read without a detour
        return _plain_v4(*plain.groups())
    recorded = _recorded(description)
    return None if recorded is None else _named(*recorded)


Recorded = tuple[str, float | None]  # a path as a description records it (not yet sanitized), and its mtime


def _recorded(description: str) -> Recorded | None:
    """``decode`` of a description other than glacierfs's plain v4, but for the
    path's sanitizing: that is left to the caller, who may do it for a batch."""
    text = description.strip()
    if not text:
        return None
    if text.startswith("<m>"):
        match = _FASTGLACIER_V4.fullmatch(text)
        if match is None:
            return None
        encoded, modified = match.group("p", "lm")
        try:
            path = binascii.a2b_base64(encoded, strict_mode=True).decode("utf-8")
        except (binascii.Error, UnicodeError):
            return None
        return path, timestamps.parse_compact(modified)
    for looks_like, parse, posix_origin in _FORMATS:
        if looks_like(text):
            try:
                recorded = parse(text)
            except (ValueError, TypeError, KeyError, UnicodeError, binascii.Error):
                return None
            if recorded is None or posix_origin:
                return recorded
            return _posix_path(recorded[0]), recorded[1]
    return _posix_path(description), None  # glacier-cli, glacier-cmd, by hand: the raw name


# The v4 description glacierfs writes (no <ce>, a time that is one): an inventory
# of millions holds mostly these, so they are read by one match, whose groups
# are the base64 path and the time's fields. Anything else goes the long way,
# through _FASTGLACIER_V4, which reads these the same way.
_PLAIN_V4 = re.compile(
    r"<m><v>4</v><p>([A-Za-z0-9+/=]*)</p><lm>(\d{8})T([01]\d|2[0-3])([0-5]\d)([0-5]\d)Z</lm></m>", re.ASCII
)
_new_decoded = tuple.__new__  # Decoded(...) without NamedTuple's own __new__, twice as fast


def _plain_v4(encoded: str, day: str, hours: str, minutes: str, seconds: str) -> Decoded | None:
    try:  # strict: any character outside the alphabet the expression allows is refused here too
        path = binascii.a2b_base64(encoded, strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return None
    safe = sanitize(path)
    if not safe:
        return None
    midnight = _DAYS[day]
    mtime = None if midnight is None else midnight + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return _new_decoded(Decoded, (safe, mtime))


# decode_many: a batch of descriptions joined by newlines (which no printable
# description holds), one match per line: the path's base64 and the time of
# glacierfs's plain v4 (see _PLAIN_V4), or FastGlacier's v3 or v4 with <ce> (which
# _FASTGLACIER_V4 reads alike), where the line is one; '' where it is not.
# One group, so that the matches are strings, not a tuple each.
_PLAIN_V4_LINES = re.compile(
    r"^(?:<m><v>[34]</v><p>([A-Za-z0-9+/=]*</p><lm>\d{8}T(?:[01]\d|2[0-3])[0-5]\d[0-5]\d)Z</lm>"
    r"(?:<ce>[^<\n]*</ce>)?</m>|.*)$",
    re.ASCII | re.MULTILINE,
)
_TIME_TAIL = len("</p><lm>YYYYMMDDThhmmss")


_DAYS = timestamps.Midnights(lambda day: timestamps.parse_compact(f"{day}T000000Z"))  # YYYYMMDD
# hhmm and ss (as _PLAIN_V4_LINES checks them) -> seconds; '' (not a plain v4) -> 0.
_HOURS_MINUTES = {f"{hour:02d}{minute:02d}": hour * 3600 + minute * 60 for hour in range(24) for minute in range(60)}
_SECONDS = {f"{seconds:02d}": seconds for seconds in range(60)}
_HOURS_MINUTES[""] = _SECONDS[""] = 0


def decode_many(descriptions: list[Any]) -> tuple[list[str | None], list[float | None]]:
    """``decode`` of each description (None for one that is not a string), as
    the list of the paths and the list of the mtimes: the same answers, for a
    batch of an inventory of millions, with one match over the batch and one
    look at all the paths it names instead of a call of each per description,
    and no object per description but its path and time. Descriptions in other
    formats are read one by one, and their paths looked at together too."""
    count = len(descriptions)
    try:
        joined = "\n".join(descriptions)
    except TypeError:  # not all strings
        joined = None
    found = _PLAIN_V4_LINES.findall(joined) if joined is not None and joined.count("\n") == count - 1 else []
    a2b = binascii.a2b_base64
    paths: list[str | None] = []
    if count and len(found) == count:
        try:
            paths = [a2b(plain[:-_TIME_TAIL], strict_mode=True).decode("utf-8") if plain else None for plain in found]
        except (binascii.Error, UnicodeError):  # one is not base64 of UTF-8: each on its own
            paths = []
    if not paths:
        return _each(descriptions)
    named = [path for path in paths if path is not None]
    if named and not _needs_no_change(named):  # as sanitize looks at each
        paths = [path if path is None else sanitize(path) for path in paths]
    # The times, a column at a time (each step a loop in C): the day's midnight,
    # computed once a day, plus the time of day. Lines that are not plain v4
    # have no day ('' -> None) and are decoded one by one below.
    midnights = map(_DAYS.__getitem__, [plain[-15:-7] for plain in found])
    clocks = map(
        operator.add,
        map(_HOURS_MINUTES.__getitem__, [plain[-6:-2] for plain in found]),
        map(_SECONDS.__getitem__, [plain[-2:] for plain in found]),
    )
    mtimes: list[float | None] = [
        None if day is None else day + clock for day, clock in zip(midnights, clocks, strict=True)
    ]
    # The rest: descriptions in other formats, read one by one, their paths
    # then checked as a batch too; and plain v4 ones of which sanitize left nothing.
    others = [index for index, path in enumerate(paths) if path is None]
    for index in [index for index, path in enumerate(paths) if path == ""]:
        paths[index] = mtimes[index] = None
    if others:
        recorded = zip(others, map(_recorded, [descriptions[index] for index in others]), strict=True)
        # Leading slashes (QNAP's absolute paths) sanitize drops as well.
        found = [(index, one[0].lstrip("/"), one[1]) for index, one in recorded if one is not None]
        named = [path for _, path, _ in found]
        clean = _needs_no_change(named)
        for index, path, mtime in found:
            safe = path if clean else sanitize(path)
            if safe:
                paths[index], mtimes[index] = safe, mtime
    return paths, mtimes


def _each(descriptions: list[Any]) -> tuple[list[str | None], list[float | None]]:
    decoded = [decode(text) if isinstance(text, str) else None for text in descriptions]
    return [None if one is None else one[0] for one in decoded], [None if one is None else one[1] for one in decoded]


def _named(path: str, mtime: float | None) -> Decoded | None:
    safe = sanitize(path)
    return Decoded(safe, mtime) if safe else None


def _posix_path(path: str) -> str:
    """A Windows path (backslashes and no '/' at all: ``C:\\backup\\f.txt``) with '/'
    separators; any other path as it is, since '\\' is an ordinary character in a
    POSIX name."""
    return path.replace("\\", "/") if "\\" in path and "/" not in path else path


_V1_PATH = re.compile(r"<Path>([A-Za-z0-9+/=\s]*)</Path>")
_V1_MODIFIED = re.compile(r"<(?:LastModified|lm)>(\d{8}T\d{6}Z)</")


def _fastglacier_v1(text: str) -> Recorded | None:
    match = _V1_PATH.search(text)
    if not match:
        return None
    mtime = _V1_MODIFIED.search(text)
    return _b64_text(match[1]), timestamps.parse_compact(mtime[1]) if mtime else None


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _mt_aws_glacier(text: str) -> Recorded | None:
    version, payload = text.split(" ", 1)
    payload = payload.strip()
    # base64.urlsafe_b64decode, without its detours: the same answers and errors
    raw = binascii.a2b_base64(payload.encode("ascii").translate(_URLSAFE) + b"=" * (-len(payload) % 4))
    decoded = raw.decode("utf-8")
    if version == "mt1":  # the JSON was UTF-8 encoded twice
        decoded = decoded.encode("latin-1").decode("utf-8")
    fields = json.loads(decoded)
    if not isinstance(fields, dict) or not isinstance(fields.get("filename"), str):
        return None
    mtime = fields.get("mtime")
    return fields["filename"], timestamps.parse_compact(mtime) if isinstance(mtime, str) else None


def _json_metadata(text: str) -> Recorded | None:
    fields = json.loads(text)
    if not isinstance(fields, dict):
        return None
    if isinstance(fields.get("Path"), str):  # CloudBerry
        modified = fields.get("UTCDateModified")
        return fields["Path"], timestamps.parse_compact(modified) if isinstance(modified, str) else None
    if isinstance(fields.get("path"), str):  # QNAP's Glacier app
        return fields["path"], None
    return None


def _b64_text(value: str) -> str:
    return base64.b64decode("".join(value.split()), validate=True).decode("utf-8")


# Tried in order (after FastGlacier v3/v4, read first in decode); the first
# whose shape matches decides. The flag says whether
# the format comes from POSIX-side tools (glacierfs among them), whose paths are
# '/'-separated and keep any backslash as part of a name.
_FORMATS: list[tuple[Callable[[str], bool], Callable[[str], Recorded | None], bool]] = [
    (lambda t: t.startswith("<ArchiveMetadata>"), _fastglacier_v1, False),
    (lambda t: t[:4] in ("mt1 ", "mt2 "), _mt_aws_glacier, True),
    (lambda t: t.startswith("{"), _json_metadata, False),
]


# What a name never holds: control characters (dropped), and lone surrogates,
# which no UTF-8 (so no catalog row, no name the kernel gets) can hold: a JSON
# description's "\udc80" decodes to one (replaced by U+FFFD).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def sanitize(path: str) -> str:
    """A safe relative path: '.', '..', empty components, NUL and control
    characters never reach it; components are cut to 255 bytes. Spaces and
    backslashes are ordinary characters of a name and stay; a lone surrogate
    becomes U+FFFD. '' if nothing usable is left."""
    if _needs_no_change((path,)):
        return path  # the common case, checked at C speed
    parts = []
    for component in _CONTROL.sub("", path).split("/"):
        if component in ("", ".", ".."):
            continue
        cleaned = _UNSAFE.sub(_REPLACEMENT, component)
        encoded = cleaned.encode("utf-8")
        if len(encoded) > MAX_COMPONENT:
            cleaned = encoded[:MAX_COMPONENT].decode("utf-8", "ignore")
        parts.append(cleaned)
    return "/".join(parts)


def _needs_no_change(paths: Sequence[str]) -> bool:
    """Whether ``paths`` are each one ``sanitize`` leaves as it is (none: False);
    at C speed, one look at them all, but for components of paths over 255 bytes."""
    wrapped = "/" + "/".join(paths) + "/"  # each component of each path between slashes
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        return False
    plain = wrapped.isascii()
    if not (wrapped.isprintable() if plain else _UNSAFE.search(wrapped) is None):
        return False
    if max(map(len, paths if plain else map(str.encode, paths)), default=0) <= MAX_COMPONENT:
        return True  # no path is longer than a component may be
    return all(len(part.encode()) <= MAX_COMPONENT for path in paths for part in path.split("/"))


def likely_final_name(name: str) -> str:
    """The name a temporary file will be renamed to (rsync's ".NAME.XXXXXX"), else ``name``.

    Archive descriptions are immutable, so the name recorded at upload should be
    the one the file ends up with. Only for a file rsync creates: any other
    name of that shape is a real dotfile's (``.env.sample``, ``.bashrc.backup``),
    and rsync's own copy of such a file is ``..env.sample.XXXXXX``. (--write-back
    waits for the rename instead of guessing.)
    """
    match = _RSYNC_TEMPORARY.match(name)
    return match["name"] if match else name
