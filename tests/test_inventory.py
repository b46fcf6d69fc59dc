"""Existing vaults: inventories reconciled with the catalog, names from every
format, the lag rules, and recovery of the tree from the manifest."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from glacierfs import names, timestamps
from glacierfs.catalog import STORED, Catalog, new_entry
from glacierfs.emulator import Emulator
from glacierfs.glacier import GlacierClient
from glacierfs.inventory import MISSING, UNNAMED, Inventories, iter_archives
from glacierfs.testing import GLACIERFS, Mount, read_or_none, run, wait_for

from .conftest import boto_client

FAST = ("--poll-interval", "0.2", "--manifest-delay", "0.3")


def inventory_applied(vault: Path) -> bool:
    """The vault shows the date of an applied inventory (not a pending job, a download, an application)."""
    try:
        value = os.getxattr(vault, "user.glacier.inventory").decode()
    except OSError:
        return False
    return timestamps.parse_iso(value) is not None


def inventories(emulator: Emulator, catalog: Catalog, state: Path) -> Inventories:
    """Inventories as a mount builds them, against the in-process emulator."""
    return Inventories(GlacierClient(emulator.url, credentials=("testing", "testing")), catalog, state)


def tree(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """path -> (kind, size, mtime in seconds, mode) of everything under root."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.stat()
            kind = "dir" if path.is_dir() else "file"
            found[str(path.relative_to(root))] = (
                kind,
                0 if kind == "dir" else info.st_size,
                int(info.st_mtime),
                info.st_mode & 0o777,
            )
    return found


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def mt2(fields: dict) -> str:
    return "mt2 " + base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


@pytest.mark.mount
def test_vault_filled_by_other_tools_shows_their_names(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="legacy")

    def upload(description: str, data: bytes) -> str:
        return boto.upload_archive(vaultName="legacy", archiveDescription=description, body=data)["archiveId"]

    upload(names.encode("photos/2019/beach.jpg", 1_560_000_000), b"jpeg" * 100)
    upload(f"<ArchiveMetadata><Path>{b64('old/fastglacier-v1.doc')}</Path></ArchiveMetadata>", b"v1")
    upload(mt2({"filename": "mt/aws.tar", "mtime": "20190102T030405Z"}), b"tarball")
    upload(json.dumps({"Path": "C:\\backup\\cloudberry.txt", "UTCDateModified": "20170101T000000Z", "Flags": 0}), b"cb")
    upload(json.dumps({"path": "/qnap/share.bin", "type": "file"}), b"qnap")
    upload("glacier-cli-name.txt", b"plain")
    upload("../../escape/attempt", b"hostile")
    empty_id = upload("", b"no name at all")
    broken_id = upload("<m><v>4</v><p>!!!</p><lm>20200101T000000Z</lm></m>", b"broken")
    upload(names.encode("dup.txt", 1_500_000_000), b"older")
    time.sleep(1.1)  # creation dates have a resolution of a second
    upload(names.encode("dup.txt", 1_600_000_000), b"newest!")

    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("legacy")
        listing = os.listdir(vault)  # first look: asks for an inventory
        pending = os.getxattr(vault, "user.glacier.inventory").decode()
        assert pending.startswith("pending job=") or inventory_applied(vault), (pending, listing)
        wait_for(lambda: inventory_applied(vault), what="the inventory")
        found = tree(vault)
        files = {p: v[1] for p, v in found.items() if v[0] == "file"}
        dup_older = [p for p in files if p.startswith("dup.txt.older-")]
        assert files == {
            "photos/2019/beach.jpg": 400,
            "old/fastglacier-v1.doc": 2,
            "mt/aws.tar": 7,
            "C:/backup/cloudberry.txt": 2,
            "qnap/share.bin": 4,
            "glacier-cli-name.txt": 5,
            "escape/attempt": 7,
            f"{UNNAMED}/{empty_id}": 14,
            f"{UNNAMED}/{broken_id}": 6,
            "dup.txt": 7,
            dup_older[0]: 5,
        }
        assert found["photos/2019/beach.jpg"][2] == 1_560_000_000
        assert found["mt/aws.tar"][2] == 1_546_398_245
        assert found["dup.txt"][2] == 1_600_000_000
        # Reading one of them works end to end.
        assert wait_for(lambda: read_or_none(vault / "mt" / "aws.tar"), what="the retrieval") == b"tarball"
    finally:
        mount.unmount()


@pytest.mark.mount
def test_inventory_lag_rules(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="lag")
    boto.upload_archive(vaultName="lag", archiveDescription=names.encode("x.txt", 0), body=b"x")
    boto.upload_archive(vaultName="lag", archiveDescription=names.encode("y.txt", 0), body=b"y")
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("lag")
        os.listdir(vault)
        wait_for(lambda: inventory_applied(vault), what="the first inventory")
        assert sorted(os.listdir(vault)) == ["x.txt", "y.txt"]
        time.sleep(2.0)  # dates have a resolution of a second
        before_changes = time.time()
        time.sleep(1.0)
        (vault / "y.txt").unlink()  # glacierfs deletes y...
        (vault / "z.txt").write_bytes(b"z")  # ...and uploads z after the next inventory's date
        # The next inventory describes the vault as it was after the first one, but
        # before these changes (an older one would be refused, as the next test shows).
        inprocess.settings.inventory_lag = time.time() - before_changes
        refreshed = run(*GLACIERFS, "refresh", vault).stdout
        assert "pending job=" in refreshed or inventory_applied(vault)
        wait_for(lambda: mount.log_text().count("inventory of vault lag dated") == 2, what="the second inventory")
        assert sorted(os.listdir(vault)) == ["x.txt", "z.txt"]  # y stays hidden, z stays listed
    finally:
        mount.unmount()


def test_entry_missing_from_a_later_inventory_is_flagged(inprocess: Emulator, tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    old = new_entry("v", "old.bin", "file", 0o644).but(
        state=STORED, archive_id="A" * 138, size=3, created="2020-01-01T00:00:00Z"
    )
    recent = new_entry("v", "recent.bin", "file", 0o644).but(
        state=STORED, archive_id="B" * 138, size=3, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    catalog.put_many([old, recent])
    added, flagged = inventories(inprocess, catalog, tmp_path).reconcile("v", iter([]), time.time())
    assert (added, flagged) == (0, 1)
    assert catalog.get("v", "old.bin").state == MISSING  # flagged, not dropped
    assert catalog.get("v", "recent.bin").state == STORED  # the inventory lags its upload


def test_streaming_parse_of_a_large_inventory(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    with open(path, "w") as out:
        out.write('{"VaultARN":"arn","InventoryDate":"2026-01-01T00:00:00Z","ArchiveList":[')
        out.write(
            ",".join(
                json.dumps(
                    {
                        "ArchiveId": f"id{i}",
                        "ArchiveDescription": f'f{i} "q" ] {{',
                        "CreationDate": "2025-01-01T00:00:00Z",
                        "Size": i,
                        "SHA256TreeHash": "00",
                    }
                )
                for i in range(20_000)
            )
        )
        out.write("]}")
    items = iter_archives(path, block=4096)  # blocks far smaller than the file
    assert sum(1 for _ in items) == 20_000
    assert next(iter_archives(path, block=100))["ArchiveId"] == "id0"


@pytest.mark.mount
def test_fresh_catalog_restores_the_tree_from_the_manifest(inprocess: Emulator, tmp_path: Path) -> None:
    first = Mount(tmp_path / "old-machine", inprocess.url, *FAST)
    try:
        vault = first.path("kept")
        vault.mkdir()
        (vault / "docs").mkdir()
        (vault / "docs" / "report.txt").write_bytes(b"report " * 1000)
        (vault / "draft.txt").write_bytes(b"draft")
        os.rename(vault / "draft.txt", vault / "docs" / "final.txt")  # the description still says draft.txt
        (vault / "empty-dir" / "nested").mkdir(parents=True)
        (vault / "empty-file").write_bytes(b"")
        os.chmod(vault / "docs" / "report.txt", 0o600)
        os.utime(vault / "docs" / "final.txt", (1_234_567_890, 1_234_567_890))
        expected = tree(vault)
        wait_for(lambda: "stored the manifest of vault kept" in first.log_text(), what="the manifest")
    finally:
        first.unmount()
    second = Mount(tmp_path / "new-machine", inprocess.url, *FAST)  # an empty catalog
    try:
        vault = second.path("kept")
        os.listdir(vault)
        wait_for(lambda: "restored vault kept from its manifest" in second.log_text(), what="the restore")
        assert tree(vault) == expected
        assert ".glacierfs" not in os.listdir(vault)
    finally:
        second.unmount()


def test_malformed_inventories_are_refused_or_skipped_never_crash(inprocess: Emulator, tmp_path: Path) -> None:
    from glacierfs import errors

    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"InventoryDate":"2026-01-01T00:00:00Z","ArchiveList":[{"ArchiveId":"a","Size":1},{"Archi')
    with pytest.raises(errors.InvalidRequest):
        list(iter_archives(truncated))
    garbage = tmp_path / "garbage.json"
    garbage.write_text(
        '{"ArchiveList":[1, "two", null, {"Size": 5}, {"ArchiveId": ""}, '
        '{"ArchiveId": "ok", "Size": -4, "ArchiveDescription": 7, "CreationDate": "yesterday"}]}'
    )
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    added, _ = inventories(inprocess, catalog, tmp_path).reconcile("v", iter_archives(garbage), time.time())
    assert added == 1
    (entry,) = [e for e in catalog.entries("v") if e.archive_id]
    assert (entry.path, entry.size) == (f"{UNNAMED}/ok", 0)
    assert next(iter_archives(tmp_path / "garbage.json")) == {"Size": 5}  # only objects are items
