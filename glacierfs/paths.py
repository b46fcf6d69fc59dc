"""Paths as glacierfs sees them: a mount path is '/VAULT/PATH', and inside a
vault a path is relative, '/'-separated, with no leading or trailing slash."""

from __future__ import annotations

from glacierfs import errors

MAX_COMPONENT = 255  # bytes in one name, as on local filesystems


def split(path: str) -> tuple[str | None, str]:
    """'/vault/a/b' -> ('vault', 'a/b'); '/vault' -> ('vault', ''); '/' -> (None, '').

    Names must be UTF-8: descriptions and the catalog hold text. The binding
    hands us undecodable bytes as surrogates, refused here for every call."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise errors.BadEncoding(f"{shown}: glacierfs keeps only names that are valid UTF-8") from None
    parts = [part for part in path.split("/") if part]
    if not parts:
        return None, ""
    return parts[0], "/".join(parts[1:])


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def name_of(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def ancestors(path: str) -> list[str]:
    """'a/b/c' -> ['a/b', 'a']: the directories above ``path``, nearest first."""
    found = []
    parent = parent_of(path)
    while parent:
        found.append(parent)
        parent = parent_of(parent)
    return found


def check_component(path: str) -> None:
    name = name_of(path)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
        raise errors.NameTooLong(f"{name[:40]}...: a name has at most {MAX_COMPONENT} bytes")
