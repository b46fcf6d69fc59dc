"""The control client without a mount: how it reads the kernel's mount table."""

from __future__ import annotations

from pathlib import Path

from glacierfs import client


def test_mountpoints_with_spaces_and_non_ascii_names_are_read_back_exactly() -> None:
    # mountinfo escapes space, tab, newline and backslash in octal; UTF-8 stays as it is.
    field = "/mnt/café\\040glacier\\134x\\012y".encode()
    assert client._unescape_mount_field(field) == Path("/mnt/café glacier\\x\ny")
