"""Listings on a real mount, with real tools (ls, find, stat, df): READDIRPLUS
hands the kernel each entry's attributes, so a first `ls -l` costs no lookup per
entry, and they are the attributes `stat` shows; listings stream a batch at a
time and stay whole while an inventory is applied; `df` of a vault counts it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from glacierfs import names
from glacierfs.emulator import Emulator
from glacierfs.listing import BATCH
from glacierfs.testing import GLACIERFS, Mount, run, wait_for

from .conftest import boto_client

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2")


def upload(url: str, vault: str, descriptions: list[str], size: int = 10) -> None:
    """Archives another client stored: glacierfs learns of them from an inventory."""
    boto = boto_client(url)
    boto.create_vault(vaultName=vault)
    for index, description in enumerate(descriptions):
        boto.upload_archive(vaultName=vault, archiveDescription=description, body=b"x" * (size + index))


def inventoried(mount: Mount, vault: str) -> str:
    """Wait until the mount applied an inventory of ``vault``; its date."""
    path = mount.path(vault)
    os.listdir(path)  # the first look asks for one
    return wait_for(
        lambda: (date := os.getxattr(path, "user.glacier.inventory").decode())[:2].isdigit() and date,
        what=f"an inventory of {vault}",
    )


@pytest.fixture
def mounts(inprocess: Emulator, tmp_path: Path) -> Iterator[list[Mount]]:
    """Mounts made with ``remount``, all unmounted at the end."""
    made: list[Mount] = []
    yield made
    for mount in made:
        mount.unmount()


def remount(mounts: list[Mount], url: str, tmp_path: Path, *extra: str) -> Mount:
    """A fresh mount of the same catalog: the kernel has no entry of it cached."""
    for mount in mounts:
        mount.unmount()
    mount = Mount(tmp_path, url, *FAST, *extra)
    mounts.append(mount)
    return mount


def asked_for(mount: Mount) -> list[str]:
    """The paths the kernel asked about one at a time (LOOKUP, GETATTR), from the debug log."""
    return re.findall(r"getattr (/\S.*)$", mount.log_text(), re.MULTILINE)


# Every kind of name an inventory gives: a directory tree, an unnamed archive,
# namesakes, and hostile or odd descriptions.
DESCRIPTIONS = [
    names.encode("top.txt", 1_600_000_000.25),
    names.encode("dir/inner.txt", 1_600_000_001),
    names.encode("dir/deeper/leaf.bin", 1_600_000_002),
    "",
    names.encode("same.txt", 1_600_000_003),
    names.encode("same.txt", 1_600_000_004),
    "../../escape.txt",
    "back\\slash.txt",
    names.encode(" lead and trail ", 1_600_000_005),
    "x/./y//z.txt",
    "<m><v>4</v><p>!!!</p></m>",
]


def listed_by_find(vault: Path) -> dict[str, str]:
    """Each entry under ``vault`` with (size, mtime, mode, links, uid, gid, kind) as
    `find` shows them: from the listing, and whatever the kernel asks besides."""
    out = run("find", vault, "-mindepth", "1", "-printf", r"%P\0%s %T@ %m %n %U %G %y\0").stdout
    fields = out.split("\0")[:-1]
    return {fields[i]: _with_ns(fields[i + 1]) for i in range(0, len(fields), 2)}


def stat_of_each(vault: Path, paths: list[str]) -> dict[str, str]:
    """The same, from `stat` of each path by name: no listing at all."""
    out = run("stat", "--printf", r"%s %.9Y %a %h %u %g %A\0", *(vault / path for path in paths)).stdout
    rows = out.split("\0")[:-1]
    return {
        path: _with_ns(row.rsplit(" ", 1)[0] + " " + ("d" if row[-10] == "d" else "f"))
        for path, row in zip(paths, rows, strict=True)
    }


def _with_ns(row: str) -> str:
    size, mtime, *rest = row.split(" ")
    return " ".join([size, str(int(Decimal(mtime) * 10**9)), *rest])


def test_ls_l_takes_every_attribute_from_the_listing(mounts: list[Mount], inprocess: Emulator, tmp_path: Path) -> None:
    upload(inprocess.url, "v", DESCRIPTIONS)
    mount = remount(mounts, inprocess.url, tmp_path)
    inventoried(mount, "v")
    (mount.path("v", "dir", "made-here")).mkdir()
    (tmp_path / "src").write_bytes(b"written through the mount")
    run("cp", tmp_path / "src", mount.path("v", "dir", "copied.txt"))
    run("touch", "-d", "@1500000000.5", mount.path("v", "dir", "copied.txt"))
    os.chmod(mount.path("v", "top.txt"), 0o600)

    # stat of each entry by name, on a fresh mount, with nothing listed.
    mount = remount(mounts, inprocess.url, tmp_path)
    walk = listed_by_find(mount.path("v"))  # (this mount's own listing, only to learn the names)
    mount = remount(mounts, inprocess.url, tmp_path)
    by_stat = stat_of_each(mount.path("v"), sorted(walk))

    # The same entries from a listing, on another fresh mount: `ls -lR` first, then find.
    mount = remount(mounts, inprocess.url, tmp_path, "--debug")
    before = len(asked_for(mount))
    shown = run("ls", "-lRa", mount.path("v")).stdout
    asked = asked_for(mount)[before:]
    by_listing = listed_by_find(mount.path("v"))
    asked_again = asked_for(mount)[before + len(asked) :]

    assert by_listing == by_stat
    assert len(by_listing) >= len(DESCRIPTIONS) + 3
    assert any(path.startswith("_unnamed/") for path in by_listing)
    assert sum("same.txt" in path for path in by_listing) == 2
    assert "dir/copied.txt" in by_listing and by_listing["dir/copied.txt"].split()[:2] == ["25", "1500000000500000000"]
    assert by_listing["top.txt"].split()[2] == "600"
    assert by_listing["dir"].endswith(" d") and by_listing["dir"].split()[3] == "2"
    assert "copied.txt" in shown
    # ls asked about the vault it was pointed at, and about no entry it listed; find,
    # listing each directory again from the kernel's cache, about the directories.
    assert asked == ["/v"]
    directories = {"/v"} | {f"/v/{path}" for path, row in by_listing.items() if row.endswith(" d")}
    assert set(asked_again) <= directories


def test_a_large_directory_lists_whole_in_batches(inprocess: Emulator, tmp_path: Path) -> None:
    count = 2 * BATCH + 100
    upload(inprocess.url, "v", [names.encode(f"f{index:05d}", 1_600_000_000 + index) for index in range(count)], 1)
    mount = Mount(tmp_path, inprocess.url, *FAST, "--debug")
    try:
        inventoried(mount, "v")
        lines = run("ls", "-l", "--time-style=+%s", mount.path("v")).stdout.splitlines()[1:]
        assert [line.split()[-1] for line in lines] == [f"f{index:05d}" for index in range(count)]
        assert [int(line.split()[4]) for line in lines] == [1 + index for index in range(count)]
        assert [int(line.split()[5]) for line in lines] == [1_600_000_000 + index for index in range(count)]
        assert [path for path in asked_for(mount) if path.startswith("/v/")] == []
    finally:
        mount.unmount()


def test_a_listing_stays_whole_while_an_inventory_is_applied(inprocess: Emulator, tmp_path: Path) -> None:
    """Entries an inventory adds mid-listing, before and after the listing's place:
    every entry once, in order, those before it never, the old ones all."""
    count = 3 * BATCH  # of long names: more than one READDIRPLUS reply's worth (1 MiB)
    old = [f"m{index:05d}" + "-" * 200 for index in range(count)]
    upload(inprocess.url, "v", [names.encode(name, 1_600_000_000) for name in old], 1)
    mount = Mount(tmp_path, inprocess.url, *FAST, "--debug")
    try:
        inventoried(mount, "v")
        with os.scandir(mount.path("v")) as listing:
            seen = [next(listing).name for _ in range(10)]  # the kernel fetched a reply's worth
            added = ["a-new", "m00005-new", "z-new"]
            upload(inprocess.url, "v", [names.encode(name, 1_600_000_000) for name in added], 1)
            time.sleep(1.1)  # an inventory lists archives older than its date, to the second
            run(*GLACIERFS, "refresh", mount.path("v"))
            wait_for(lambda: mount.log_text().count("inventory of vault v dated") == 2, what="the second inventory")
            seen += [entry.name for entry in listing]
        assert seen == sorted(set(seen))
        assert set(old) <= set(seen)
        assert "z-new" in seen  # after the listing's place: listed
        assert "a-new" not in seen and "m00005-new" not in seen  # before it: not, and nothing twice
        assert "z-new" in os.listdir(mount.path("v")) and "a-new" in os.listdir(mount.path("v"))
        assert len(re.findall(r"readdir /v from offset [1-9]", mount.log_text())) >= 2  # the listing streamed
    finally:
        mount.unmount()


def df(path: Path) -> tuple[int, int]:
    """(bytes used, files) as `df` shows them for the filesystem holding ``path``."""
    used, files = run("df", "-B1", "--output=used,iused", path).stdout.splitlines()[1].split()
    return int(used), int(files)


def blocks(size: int) -> int:
    return -(-size // 4096) * 4096


def test_df_of_a_vault_counts_that_vault(mounts: list[Mount], inprocess: Emulator, tmp_path: Path) -> None:
    upload(inprocess.url, "a", ["one", "two", "three"], 1000)  # 1000 + 1001 + 1002 bytes
    upload(inprocess.url, "b", ["alone"], 5000)
    mount = remount(mounts, inprocess.url, tmp_path)
    inventoried(mount, "a")
    inventoried(mount, "b")
    a, b = mount.path("a"), mount.path("b")
    wait_for(lambda: "user.glacier.archives" in os.listxattr(a), what="a's figures")
    figures = int(os.getxattr(a, "user.glacier.archives")), int(os.getxattr(a, "user.glacier.bytes"))
    assert figures == (3, 3003)
    assert df(a) == df(a / "one") == (blocks(3003), 3)
    assert df(b) == (blocks(5000), 1)
    assert df(mount.mountpoint) == (blocks(8003), 4)

    (tmp_path / "src").write_bytes(b"y" * 10_000)
    run("cp", tmp_path / "src", a / "new.bin")
    assert df(a) == (blocks(13_003), 4)
    assert df(b) == (blocks(5000), 1)
    assert df(mount.mountpoint) == (blocks(18_003), 5)
    run("rm", a / "one")
    assert df(a) == (blocks(12_003), 3)
