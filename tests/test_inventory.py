"""Existing vaults: inventories reconciled with the catalog, names from every
format, the lag rules, and recovery of the tree from the manifest."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

import pytest

from glacierfs import errors, names, timestamps
from glacierfs.catalog import STORED, Catalog, new_entry
from glacierfs.emulator import Emulator
from glacierfs.glacier import GlacierClient
from glacierfs.inventory import MISSING, UNNAMED, Inventories, iter_archives
from glacierfs.testing import GLACIERFS, Mount, read_or_none, run, wait_for

from .conftest import archives, boto_client

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
    # A Windows name with an unpaired surrogate: "\ud800" in the description, no UTF-8 for it.
    upload(json.dumps({"Path": "C:\\backup\\odd\ud800.txt", "UTCDateModified": "20170101T000000Z"}), b"odd")
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
        under_way = pending.startswith(("pending job=", "downloading ", "applying "))
        assert under_way or inventory_applied(vault), (pending, listing)
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
            "C:/backup/odd\ufffd.txt": 3,
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


def test_archive_missing_is_flagged_when_another_is_listed_twice(inprocess: Emulator, tmp_path: Path) -> None:
    """The count of listed archives must not make up for a missing one with a duplicate."""
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    gone, kept = (
        new_entry("v", name, "file", 0o644).but(
            state=STORED, archive_id=letter * 138, size=3, created="2020-01-01T00:00:00Z"
        )
        for name, letter in (("gone.bin", "A"), ("kept.bin", "B"))
    )
    catalog.put_many([gone, kept])
    listed = {
        "ArchiveId": "B" * 138,
        "ArchiveDescription": names.encode("kept.bin", 0),
        "CreationDate": "2020-01-01T00:00:00Z",
        "Size": 3,
        "SHA256TreeHash": "0" * 64,
    }
    added, flagged = inventories(inprocess, catalog, tmp_path).reconcile("v", iter([listed, listed]), time.time())
    assert (added, flagged) == (0, 1)
    assert catalog.get("v", "gone.bin").state == MISSING
    assert catalog.get("v", "kept.bin").state == STORED


def test_archives_are_counted_as_the_inventory_is_downloaded(tmp_path: Path) -> None:
    """The count fed a piece at a time (a needle cut between two pieces) is the count of the file."""
    from glacierfs.inventoryfile import ArchiveCounter, count_archives

    listed = [{"ArchiveId": f"id{i}", "ArchiveDescription": '"ArchiveId"', "Size": i} for i in range(50)]
    documents = {
        "inventory.json": json.dumps({"VaultARN": "arn", "ArchiveList": listed}).encode(),
        "inventory.csv": b"ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\n"
        + b"".join(f'id{i},"d",2020-01-01T00:00:00Z,{i},h\n'.encode() for i in range(49))
        + b'id49,"d",2020-01-01T00:00:00Z,49,h',
    }
    for name, document in documents.items():
        (tmp_path / name).write_bytes(document)
        assert count_archives(tmp_path / name) == 50
        for piece in (1, 5, 7, 100):
            counter = ArchiveCounter()
            for start in range(0, len(document), piece):
                counter.feed(document[start : start + piece])
            assert counter.total == 50, (name, piece)


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
    # ijson's C parser cannot give a lone low surrogate as text: refused, said so.
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text('{"ArchiveList":[{"ArchiveId":"a","ArchiveDescription":"raw\\udc80.txt"}]}')
    with pytest.raises(errors.InvalidRequest, match="not valid JSON"):
        list(iter_archives(surrogate))
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


def test_items_of_odd_types_in_an_inventory_file_are_staged_as_before(tmp_path: Path) -> None:
    """Values C code and SQLite cannot take as they are (objects, lists)
    send their batch to the item-by-item check, which keeps what it kept before."""
    from glacierfs import reconcile

    inventory = tmp_path / "odd.json"
    inventory.write_text(
        '{"ArchiveList":[1, {"ArchiveId": "ok", "ArchiveDescription": "ok.txt", "CreationDate": "", '
        '"Size": 3, "SHA256TreeHash": "h"}, {"ArchiveId": "nested", "ArchiveDescription": {"Path": "x"}, '
        '"CreationDate": null, "Size": -1, "SHA256TreeHash": ["h"]}, '
        '{"ArchiveId": "real", "ArchiveDescription": "real.txt", "CreationDate": 5, "Size": 2.5, '
        '"SHA256TreeHash": null}]}'
    )
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    outcome = reconcile.reconcile(catalog.path, "v", inventory, time.time())
    assert (outcome.listed, outcome.added) == (3, 3)
    found = {e.path: (e.size, e.tree_hash, e.created) for e in catalog.entries("v") if e.archive_id}
    assert found == {"ok.txt": (3, "h", None), f"{UNNAMED}/nested": (0, None, None), "real.txt": (0, None, "5")}


def test_an_id_that_is_not_plain_sends_a_second_inventory_to_be_read_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from glacierfs import reconcile

    def item(archive_id: str, name: str) -> dict[str, object]:
        return {"ArchiveId": archive_id, "ArchiveDescription": names.encode(name, 0), "Size": 1}

    known = [item(f"K{index:03d}", f"k{index}") for index in range(10)]
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"ArchiveList": known}, separators=(",", ":")))
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    reconcile.reconcile(catalog.path, "v", first, time.time(), expected=10)
    second = tmp_path / "second.json"
    text = json.dumps({"ArchiveList": [*known, item("NEW", "new")]}, separators=(",", ":"))
    second.write_text(text.replace('"NEW"', '"N\\u0045W"'))  # the same id, escaped
    with caplog.at_level("INFO", logger="glacierfs.staging"):
        outcome = reconcile.reconcile(catalog.path, "v", second, time.time(), expected=11)
    assert "is read whole" in caplog.text
    assert (outcome.listed, outcome.added) == (11, 1)
    assert catalog.get("v", "new").archive_id == "NEW"


def test_archives_staged_by_id_that_the_catalog_forgets_meanwhile_keep_their_names(tmp_path: Path) -> None:
    """Staged by ids alone, then the catalog forgets every archive it knew: they are
    all new again, and each is read from the file again (not placed nameless)."""
    from glacierfs import reconcile

    listed = [
        {"ArchiveId": f"K{index:03d}", "ArchiveDescription": names.encode(f"k{index}", 0), "Size": 1}
        for index in range(10)
    ]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"ArchiveList": listed}, separators=(",", ":")))
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    reconcile.reconcile(catalog.path, "v", inventory, time.time())
    reconciler = reconcile.Reconciler(catalog.path, "v", time.time(), expected=10)
    try:
        reconciler.stage_file(inventory)
        assert reconciler._thin is not None  # staged by ids
        for index in range(10):
            catalog.delete("v", f"k{index}")  # forgotten, not deleted from Glacier
        outcome = reconciler.apply()
    finally:
        reconciler.close()
    assert (outcome.listed, outcome.added) == (10, 10)
    assert sorted(e.path for e in catalog.entries("v")) == sorted(f"k{index}" for index in range(10))


# Inventory handling bugs (issue 12, item 6) -------------------------------------


@pytest.mark.mount
def test_a_csv_inventory_job_started_by_another_client_is_read(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="csv")
    # Descriptions as written: a raw name holding a comma and quotes (CSV quotes and
    # escapes it), and FastGlacier names.
    uploads = {
        'comma, "quoted" name.txt': ('comma, "quoted" name.txt', b"tricky"),
        "plain.txt": (names.encode("plain.txt", 1_600_000_000), b"plain"),
        "dir/ spaced .txt": (names.encode("dir/ spaced .txt", 1_600_000_000), b"spaced"),
    }
    for description, body in uploads.values():
        boto.upload_archive(vaultName="csv", archiveDescription=description, body=body)
    expected = {path: body for path, (_, body) in uploads.items()}
    other = boto.initiate_job(vaultName="csv", jobParameters={"Type": "inventory-retrieval", "Format": "CSV"})
    started = inprocess.calls["InitiateJob"]
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("csv")
        os.listdir(vault)  # the first look reuses the CSV job
        wait_for(lambda: inventory_applied(vault), what="the inventory")
        found = {p: v[1] for p, v in tree(vault).items() if v[0] == "file"}
        assert found == {path: len(body) for path, body in expected.items()}
        assert inprocess.calls["InitiateJob"] == started  # no job of its own
        assert f"reusing inventory job {other['jobId'][:16]}" in mount.log_text()
        # Dated by its job, not 'now': the CSV carries no date.
        job_date = timestamps.parse_iso(boto.describe_job(vaultName="csv", jobId=other["jobId"])["CreationDate"])
        assert timestamps.parse_iso(os.getxattr(vault, "user.glacier.inventory").decode()) == job_date
    finally:
        mount.unmount()


def test_a_partial_inventory_job_is_never_reused() -> None:
    from glacierfs.records import Job

    raw = {"JobId": "j", "Action": "InventoryRetrieval", "StatusCode": "Succeeded", "Completed": True}
    whole = Job.from_response({**raw, "InventoryRetrievalParameters": {"Format": "CSV", "Limit": None}})
    limited = Job.from_response({**raw, "InventoryRetrievalParameters": {"Format": "JSON", "Limit": "100"}})
    dated = Job.from_response({**raw, "InventoryRetrievalParameters": {"StartDate": "2020-01-01T00:00:00Z"}})
    assert (whole.inventory_format, whole.inventory_partial) == ("CSV", False)
    assert limited.inventory_partial and dated.inventory_partial


@pytest.mark.mount
def test_the_newest_inventory_job_listed_is_reused(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="jobs")
    boto.upload_archive(vaultName="jobs", archiveDescription=names.encode("first.txt", 0), body=b"1")
    boto.initiate_job(vaultName="jobs", jobParameters={"Type": "inventory-retrieval"})
    time.sleep(1.1)  # dates have a resolution of a second
    boto.upload_archive(vaultName="jobs", archiveDescription=names.encode("second.txt", 0), body=b"2")
    newest = boto.initiate_job(vaultName="jobs", jobParameters={"Type": "inventory-retrieval"})["jobId"]
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("jobs")
        os.listdir(vault)
        wait_for(lambda: inventory_applied(vault), what="the inventory")
        assert sorted(os.listdir(vault)) == ["first.txt", "second.txt"]
        assert f"reusing inventory job {newest[:16]}" in mount.log_text()
        assert inprocess.calls["InitiateJob"] == 2  # both by boto3
    finally:
        mount.unmount()


@pytest.mark.mount
def test_an_inventory_of_another_vault_is_refused(inprocess: Emulator, tmp_path: Path) -> None:
    from glacierfs.emulator.store import current_store

    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="mine")
    boto.upload_archive(vaultName="mine", archiveDescription=names.encode("mine.txt", 0), body=b"mine")
    job_id = boto.initiate_job(vaultName="mine", jobParameters={"Type": "inventory-retrieval"})["jobId"]
    boto.describe_job(vaultName="mine", jobId=job_id)  # the output is written once the job completes
    # What a confused service (or a catalog mix-up) would hand over: another vault's inventory.
    foreign = json.dumps(
        {
            "VaultARN": "arn:aws:glacier:us-east-1:123456789012:vaults/theirs",
            "InventoryDate": timestamps.iso(time.time()),
            "ArchiveList": [
                {
                    "ArchiveId": "X" * 138,
                    "ArchiveDescription": names.encode("theirs.txt", 0),
                    "CreationDate": timestamps.iso(time.time() - 10),
                    "Size": 6,
                    "SHA256TreeHash": "0" * 64,
                }
            ],
        }
    ).encode()
    store = current_store()
    store.job_output_path(job_id).write_bytes(foreign)
    store.execute("UPDATE jobs SET output_size=? WHERE id=?", (len(foreign), job_id))
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("mine")
        os.listdir(vault)  # reuses that job
        wait_for(lambda: "refused the inventory of vault mine" in mount.log_text(), what="the refusal")
        assert "describes arn:aws:glacier:us-east-1:123456789012:vaults/theirs, not vault mine" in mount.log_text()
        assert "theirs.txt" not in os.listdir(vault)
        assert not inventory_applied(vault)
    finally:
        mount.unmount()


@pytest.mark.mount
def test_an_inventory_older_than_the_one_applied_is_refused(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="dated")
    boto.upload_archive(vaultName="dated", archiveDescription=names.encode("kept.txt", 0), body=b"k")
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        vault = mount.path("dated")
        os.listdir(vault)
        wait_for(lambda: inventory_applied(vault), what="the first inventory")
        applied = os.getxattr(vault, "user.glacier.inventory").decode()
        inprocess.settings.inventory_lag = 3 * 24 * 3600  # the next one describes the vault three days ago
        run(*GLACIERFS, "refresh", vault)
        wait_for(lambda: "refused the inventory of vault dated" in mount.log_text(), what="the refusal")
        assert f"older than the inventory applied ({applied})" in mount.log_text()
        assert os.getxattr(vault, "user.glacier.inventory").decode() == applied
        assert os.listdir(vault) == ["kept.txt"]
    finally:
        mount.unmount()


@pytest.mark.mount
def test_names_come_back_from_descriptions_alone(inprocess: Emulator, tmp_path: Path) -> None:
    wanted = [" lead space.txt", "trail space.txt ", "back\\slash.txt", "dir\\with\\backslashes/file"]
    first = Mount(tmp_path / "first", inprocess.url, *FAST)
    try:
        first.path("v").mkdir()
        for path in wanted:
            target = first.path("v", *path.split("/"))
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(path.encode())
    finally:
        first.unmount()
    boto = boto_client(inprocess.url)
    for archive in archives(inprocess.url, "v"):  # no manifest: names from the descriptions alone
        if ".glacierfs/" in (names.decode(archive["ArchiveDescription"]) or names.Decoded("", None)).path:
            boto.delete_archive(vaultName="v", archiveId=archive["ArchiveId"])
    second = Mount(tmp_path / "second", inprocess.url, *FAST)
    try:
        vault = second.path("v")
        os.listdir(vault)
        wait_for(lambda: inventory_applied(vault), what="the inventory")
        found = {p for p, v in tree(vault).items() if v[0] == "file"}
        assert found == set(wanted)
        assert "restored vault v from its manifest" not in second.log_text()
    finally:
        second.unmount()


# Downloading -----------------------------------------------------------------


class FailingAfter(GlacierClient):
    """The emulator's client, with an outage after ``calls`` GetJobOutput requests."""

    def __init__(self, url: str, calls: int, seen: list[str], inventories: list[Inventories]) -> None:
        super().__init__(url, credentials=("testing", "testing"))
        self.calls = calls
        self.seen = seen
        self.inventories = inventories

    def get_job_output(self, vault, job_id, byte_range=None):  # type: ignore[no-untyped-def]
        self.seen.append(self.inventories[0].describe(vault))
        if self.calls == 0:
            from glacierfs import errors

            raise errors.ServiceUnavailable("an outage, on purpose")
        self.calls -= 1
        return super().get_job_output(vault, job_id, byte_range)


def test_a_download_cut_short_resumes_where_it_stopped(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="big")
    for index in range(60):
        boto.upload_archive(vaultName="big", archiveDescription=names.encode(f"f{index:03d}.bin", 0), body=b"x")
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("big")
    seen: list[str] = []
    holder: list[Inventories] = []
    failing = Inventories(FailingAfter(inprocess.url, 3, seen, holder), catalog, tmp_path / "state", chunk_size=1024)
    holder.append(failing)
    failing.refresh("big")
    failing.poll_once()  # three ranges, then the outage
    partial = list((tmp_path / "state" / "inventories").iterdir())
    assert [p.stat().st_size for p in partial] == [3 * 1024]
    assert seen[1].startswith("downloading 1.0 of ") and seen[1].endswith(" KiB"), seen
    assert catalog.vault_is_empty("big")
    first_requests = inprocess.calls["GetJobOutput"]
    # A remount: a new Inventories on the same state directory fetches only the rest.
    resumed = inventories(inprocess, catalog, tmp_path / "state")
    resumed.chunk_size = 1024
    resumed.poll_once()
    size = boto.describe_job(vaultName="big", jobId=catalog_job(boto))["InventorySizeInBytes"]
    assert first_requests == 3
    assert inprocess.calls["GetJobOutput"] - first_requests == -(-(size - 3 * 1024) // 1024)
    assert len([e for e in catalog.entries("big") if e.kind == "file"]) == 60
    assert list((tmp_path / "state" / "inventories").iterdir()) == []  # applied: the download goes
    assert timestamps.parse_iso(resumed.describe("big")) is not None


def catalog_job(boto) -> str:  # type: ignore[no-untyped-def]
    (job,) = boto.list_jobs(vaultName="big")["JobList"]
    return job["JobId"]


class Corrupting(GlacierClient):
    """The emulator's client; one range arrives with a byte flipped, and the tree hash Glacier sent for it."""

    def get_job_output(self, vault, job_id, byte_range=None):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        from glacierfs.treehash import tree_hash

        output = super().get_job_output(vault, job_id, byte_range)
        flipped = bytes([output.body[0] ^ 0xFF]) + output.body[1:]
        return replace(output, body=flipped, tree_hash=tree_hash(output.body))


def test_a_range_that_fails_its_tree_hash_is_not_kept(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="v")
    boto.upload_archive(vaultName="v", archiveDescription=names.encode("f.bin", 0), body=b"x")
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    corrupting = Inventories(Corrupting(inprocess.url, credentials=("t", "t")), catalog, tmp_path / "state")
    corrupting.refresh("v")
    corrupting.poll_once()
    assert catalog.vault_is_empty("v")
    assert [p.stat().st_size for p in (tmp_path / "state" / "inventories").iterdir()] == [0]
    assert catalog.inventory("v")[0] is not None  # still pending: the next round downloads it again


def test_placement_of_namesakes_collisions_and_the_nameless(inprocess: Emulator, tmp_path: Path) -> None:
    """The set-based placement gives what the one-by-one rules gave."""
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    catalog.put_many(
        [
            new_entry("v", "taken", "dir", 0o755),
            new_entry("v", "taken/inside", "file", 0o644).but(state=STORED, archive_id="K" * 138),
            new_entry("v", "user-file", "file", 0o644),
        ]
    )

    def item(archive_id: str, path: str | None, created: str, size: int = 1) -> dict[str, object]:
        description = names.encode(path, 1_600_000_000) if path is not None else ""
        return {"ArchiveId": archive_id, "ArchiveDescription": description, "CreationDate": created, "Size": size}

    listed = [
        item("newest-a", "same.txt", "2024-03-01T00:00:00.000Z", 3),
        item("older-aa", "same.txt", "2024-02-01T00:00:00.000Z", 2),
        item("oldest-a", "same.txt", "2024-01-01T00:00:00.000Z", 1),
        item("twice-id", "twice.txt", "2024-01-01T00:00:00.000Z"),
        item("twice-id", "twice.txt", "2024-01-01T00:00:00.000Z"),  # the same archive listed twice
        item("taken-dir", "taken", "2024-01-01T00:00:00.000Z"),  # a directory's name
        item("under-file", "user-file/x", "2024-01-01T00:00:00.000Z"),  # under the user's file
        item("file-first", "f", "2024-01-01T00:00:00.000Z"),
        item("under-new", "f/g/h", "2024-01-01T00:00:00.000Z"),  # under a new archive's name
        item("nameless", None, "2024-01-01T00:00:00.000Z"),
        item("K" * 138, "taken/inside", "2023-01-01T00:00:00.000Z"),  # known: left alone
    ]
    added, flagged = inventories(inprocess, catalog, tmp_path).reconcile("v", iter(listed), time.time())
    files = {e.path: e.archive_id for e in catalog.entries("v") if e.kind == "file"}
    assert files == {
        "same.txt": "newest-a",
        "same.txt.older-20240201T000000Z-older-aa": "older-aa",
        "same.txt.older-20240101T000000Z-oldest-a": "oldest-a",
        "twice.txt": "twice-id",
        "taken.older-20240101T000000Z-taken-di": "taken-dir",
        f"{UNNAMED}/under-file": "under-file",
        "f": "file-first",
        f"{UNNAMED}/under-new": "under-new",
        f"{UNNAMED}/nameless": "nameless",
        "taken/inside": "K" * 138,
        "user-file": None,
    }
    assert (added, flagged) == (9, 0)
    assert {e.path for e in catalog.entries("v") if e.kind == "dir"} == {"taken", UNNAMED}


def test_what_is_under_a_suffixed_name_or_a_new_file_goes_to_unnamed(inprocess: Emulator, tmp_path: Path) -> None:
    """A directory a new name needs that is an older namesake's suffixed name, or
    a new archive's file name: what is in it (and below it) goes to _unnamed."""
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    suffixed = "a.older-20240101T000000Z-older-aa"

    def item(archive_id: str, path: str | None, created: str) -> dict[str, object]:
        description = names.encode(path, 1_600_000_000) if path is not None else ""
        return {"ArchiveId": archive_id, "ArchiveDescription": description, "CreationDate": created, "Size": 1}

    listed = [
        item("newest-a", "a", "2024-03-01T00:00:00.000Z"),
        item("older-aa", "a", "2024-01-01T00:00:00.000Z"),
        item("under-x", f"{suffixed}/x", "2024-01-01T00:00:00.000Z"),
        item("under-y", f"{suffixed}/sub/y", "2024-01-01T00:00:00.000Z"),
        item("file-f", "f", "2024-01-01T00:00:00.000Z"),
        item("under-f", "f/g", "2024-01-01T00:00:00.000Z"),
        item("older-fg", "f/g", "2023-01-01T00:00:00.000Z"),  # an older namesake, under the file too
    ]
    inventories(inprocess, catalog, tmp_path).reconcile("v", iter(listed), time.time())
    files = {e.path: e.archive_id for e in catalog.entries("v") if e.kind == "file"}
    assert files == {
        "a": "newest-a",
        suffixed: "older-aa",
        "f": "file-f",
        **{f"{UNNAMED}/{archive_id}": archive_id for archive_id in ("under-x", "under-y", "under-f", "older-fg")},
    }
    assert {e.path for e in catalog.entries("v") if e.kind == "dir"} == {UNNAMED}


def test_nameless_archives_pass_over_unnamed_folders_new_archives_want_as_files(
    inprocess: Emulator, tmp_path: Path
) -> None:
    """A new archive named _unnamed, _unnamed-2, ... keeps that name, and the nameless
    go to the first such folder nobody wants: among the first 16 (which the walk of
    the new names looks for) and past them."""
    folders = [UNNAMED] + [f"{UNNAMED}-{number}" for number in range(2, 19)]
    listed = [
        {
            "ArchiveId": f"file-{number}",
            "ArchiveDescription": names.encode(folder, 1_600_000_000),
            "CreationDate": "2024-01-01T00:00:00.000Z",
            "Size": 1,
        }
        for number, folder in enumerate(folders)
    ]
    listed.append({"ArchiveId": "nameless", "ArchiveDescription": "", "CreationDate": "2024-01-01T00:00:00.000Z"})
    for wanted in (1, 3, 17, 18):  # _unnamed kept by a file; then the 3rd, the 17th and the 18th folders
        catalog_path = tmp_path / f"c{wanted}.sqlite"
        catalog = Catalog(catalog_path)
        catalog.add_vault("v")
        chosen = [item for item in listed if item["ArchiveId"] != f"file-{wanted - 1}"]
        inventories(inprocess, catalog, tmp_path / f"s{wanted}").reconcile("v", iter(chosen), time.time())
        files = {e.path: e.archive_id for e in catalog.entries("v") if e.kind == "file"}
        free = folders[wanted - 1]
        assert files[f"{free}/nameless"] == "nameless"
        assert {path for path in files if path != f"{free}/nameless"} == set(folders) - {free}
        catalog.close()


def test_a_large_inventory_staged_in_two_processes_gives_the_same_tree(
    inprocess: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glacierfs import reconcile, staging
    from glacierfs.testing import write_generated_inventory

    inventory = tmp_path / "inventory.json"
    write_generated_inventory(inventory, 3_000)
    trees = []
    for parallel in (False, True):
        monkeypatch.setattr(staging, "_parallel", lambda path, parallel=parallel: parallel)
        catalog = Catalog(tmp_path / f"catalog-{parallel}.sqlite")
        catalog.add_vault("big")
        outcome = reconcile.reconcile(catalog.path, "big", inventory, time.time())
        assert (outcome.listed, outcome.added) == (3_000, 3_000)
        trees.append([(e.path, e.kind, e.size, e.archive_id, e.is_dir or e.mtime_ns) for e in catalog.entries("big")])
    assert trees[0] == trees[1]
    # A half that cannot be read sends it back to one process, which says what is wrong.
    broken = tmp_path / "broken.json"
    broken.write_bytes(inventory.read_bytes()[:-5000] + b"]}")
    catalog = Catalog(tmp_path / "broken.sqlite")
    catalog.add_vault("big")
    with pytest.raises(errors.InvalidRequest):
        reconcile.reconcile(catalog.path, "big", broken, time.time())
    assert catalog.vault_is_empty("big")


def test_a_second_inventory_staged_by_ids_gives_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A catalog that knows nearly every archive stages the ids alone, and reads the
    new archives' rows again: the tree, states and counts are those of staging whole."""
    import shutil

    from glacierfs import reconcile, staging
    from glacierfs.testing import generated_archive, write_generated_inventory

    first = tmp_path / "first.json"
    write_generated_inventory(first, 3_000)
    base = Catalog(tmp_path / "base.sqlite")
    base.add_vault("big")
    reconcile.reconcile(base.path, "big", first, time.time())
    base.close()
    # The next day: 20 new archives (a manifest among them), one listed twice, 5 gone.
    listed = [generated_archive(index)[0] for index in range(5, 3_020)] + [generated_archive(7)[0]]
    listed.append(
        {
            **generated_archive(4_000)[0],
            "ArchiveDescription": names.encode(".glacierfs/manifest-20260101T000000Z.json.gz", 0),
        }
    )
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"VaultARN": "arn", "ArchiveList": listed}, separators=(",", ":")))
    results = []
    for label, expected, fill_max in (
        ("whole", None, 100_000),
        ("ids", len(listed), 100_000),
        ("ids, many new", len(listed), 0),
    ):
        monkeypatch.setattr(staging, "FILL_MAX", fill_max)
        path = tmp_path / f"{label}.sqlite"
        shutil.copy(tmp_path / "base.sqlite", path)
        caplog.clear()
        with caplog.at_level("INFO", logger="glacierfs.staging"):
            outcome = reconcile.reconcile(path, "big", second, time.time(), expected=expected)
        assert ("read from its inventory again" in caplog.text) == (expected is not None), label
        catalog = Catalog(path)
        tree = [
            (e.path, e.kind, e.state, e.size, e.archive_id, e.tree_hash, e.is_dir or e.mtime_ns)
            for e in catalog.entries("big")
        ]
        results.append((outcome, tree, [m.archive_id for m in catalog.manifests("big")]))
        catalog.close()
    assert results[0][0] == reconcile.Outcome(listed=len(listed), added=20, flagged=5, back=0)
    assert results[0][2] == ["4000".zfill(12) + "A" * 126]
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_an_archive_recorded_while_the_inventory_is_staged_is_known(tmp_path: Path) -> None:
    """The known archives are copied while the inventory is staged; one the mount
    records meanwhile is known all the same (not placed a second time)."""
    from glacierfs import reconcile

    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    stored = {"state": STORED, "size": 3, "created": "2020-01-01T00:00:00Z"}
    catalog.put(new_entry("v", "a.bin", "file", 0o644).but(archive_id="A" * 138, **stored))
    listed = [
        {"ArchiveId": letter * 138, "ArchiveDescription": names.encode(name, 0), "CreationDate": "2020-01-01T00:00:00Z"}
        for letter, name in (("A", "a.bin"), ("B", "b.bin"))
    ]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"VaultARN": "arn", "ArchiveList": listed}))
    reconciler = reconcile.Reconciler(catalog.path, "v", time.time(), expected=2)
    try:
        reconciler.stage_file(inventory)
        catalog.put(new_entry("v", "b.bin", "file", 0o644).but(archive_id="B" * 138, **stored))  # its upload ends
        outcome = reconciler.apply()
    finally:
        reconciler.close()
    assert (outcome.listed, outcome.added) == (2, 0)
    assert sorted(e.path for e in catalog.entries("v")) == ["a.bin", "b.bin"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("known-")] == []  # the copy is gone


def test_listings_show_the_old_tree_until_the_new_one_commits(
    inprocess: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glacierfs import reconcile

    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    catalog.put(new_entry("v", "mine.txt", "file", 0o644))
    seen_meanwhile: list[list[str]] = []
    write = reconcile.Reconciler._write

    def write_then_look(self: reconcile.Reconciler) -> reconcile.Outcome:
        outcome = write(self)  # written, not yet committed
        started = time.monotonic()
        seen_meanwhile.append(catalog.child_names("v", ""))  # the mount's own connection
        assert time.monotonic() - started < 1  # a reader does not wait for the writer
        return outcome

    monkeypatch.setattr(reconcile.Reconciler, "_write", write_then_look)
    archives = [{"ArchiveId": f"id{i}", "ArchiveDescription": names.encode(f"new{i}.txt", 0)} for i in range(3)]
    inventories(inprocess, catalog, tmp_path).reconcile("v", iter(archives), time.time())
    assert seen_meanwhile == [["mine.txt"]]
    assert catalog.child_names("v", "") == ["mine.txt", "new0.txt", "new1.txt", "new2.txt"]


def test_stopping_mid_apply_keeps_the_download_for_the_next_mount(
    inprocess: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="v")
    for index in range(3):
        boto.upload_archive(vaultName="v", archiveDescription=names.encode(f"f{index}", 0), body=b"x")
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    stopping = inventories(inprocess, catalog, tmp_path / "state")
    stopping.refresh("v")
    show = Inventories._show

    def unmount_while_applying(self: Inventories, vault: str, text: str | None) -> None:
        if text and text.startswith("applying"):
            self._stopping.set()  # what stop() does, from the unmount
        show(self, vault, text)

    monkeypatch.setattr(Inventories, "_show", unmount_while_applying)
    stopping.poll_once()
    monkeypatch.undo()
    assert catalog.vault_is_empty("v") and catalog.inventory("v")[0] is not None  # nothing applied, still pending
    assert len(list((tmp_path / "state" / "inventories").iterdir())) == 1  # the download is kept
    downloads = inprocess.calls["GetJobOutput"]
    inventories(inprocess, catalog, tmp_path / "state").poll_once()  # the next mount
    assert inprocess.calls["GetJobOutput"] == downloads  # not downloaded again
    assert sorted(catalog.child_names("v", "")) == ["f0", "f1", "f2"]


class WrongWholeHash(GlacierClient):
    """The emulator's client; Glacier's tree hash of the whole inventory is not the one of its bytes."""

    def describe_job(self, vault, job_id):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(super().describe_job(vault, job_id), tree_hash="0" * 64)


def children_of_this_process() -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()}


def test_a_first_inventory_is_staged_while_it_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes stage the halves of a vault's first inventory as its bytes
    arrive: the tree is the one staged after the download. A download that fails
    its whole tree hash leaves nothing staged, no process and no scratch behind."""
    from glacierfs import staging
    from glacierfs.testing import ServedEmulator, write_generated_inventory

    inventory = tmp_path / "inventory.json"
    write_generated_inventory(inventory, 3_000, vault="big")
    run(*GLACIERFS, "emulator", "seed", "--data-dir", tmp_path / "data", "--vault", "big", inventory)
    server = ServedEmulator(data_dir=tmp_path / "data")
    try:
        trees = []
        for label, minimum in (("after", 1 << 62), ("while", 0)):
            monkeypatch.setattr(staging, "EARLY_MIN", minimum)
            catalog = Catalog(tmp_path / f"{label}.sqlite")
            catalog.add_vault("big")
            state = tmp_path / f"state-{label}"
            glacier = GlacierClient(server.url, credentials=("testing", "testing"))
            follower = Inventories(glacier, catalog, state, chunk_size=64 * 1024)  # ~20 ranges
            follower.refresh("big")
            caplog.clear()
            with caplog.at_level("INFO", logger="glacierfs.staging"):
                follower.poll_once()
            assert ("staged by two processes while downloaded" in caplog.text) == (label == "while"), caplog.text
            assert list((state / "inventories").iterdir()) == []
            trees.append(
                [
                    (e.path, e.kind, e.state, e.size, e.archive_id, e.tree_hash, e.created, e.is_dir or e.mtime_ns)
                    for e in catalog.entries("big")
                ]
            )
            catalog.close()
        assert len([row for row in trees[0] if row[1] == "file"]) == 3_000
        assert trees[1] == trees[0]

        catalog = Catalog(tmp_path / "wrong.sqlite")
        catalog.add_vault("big")
        state = tmp_path / "state-wrong"
        before = children_of_this_process()
        wrong = Inventories(WrongWholeHash(server.url, credentials=("t", "t")), catalog, state, chunk_size=64 * 1024)
        wrong.refresh("big")
        caplog.clear()
        with caplog.at_level("INFO", logger="glacierfs.staging"):
            wrong.poll_once()
        assert "staged by two processes while it is downloaded" in caplog.text
        assert catalog.vault_is_empty("big")
        assert catalog.inventory("big")[0] is not None  # still pending: the next round downloads it again
        assert list((state / "inventories").iterdir()) == []  # the download and both halves' scratch are gone
        assert children_of_this_process() == before
    finally:
        server.stop()


def test_a_staging_process_starts_without_the_service_client() -> None:
    """A first inventory's staging processes start while the download runs, on the
    cores it needs too: boto3, imported with them, cost each 0.1 s of CPU."""
    code = "import sys, glacierfs.staging; print([m for m in ('boto3', 'botocore') if m in sys.modules])"
    assert run(sys.executable, "-c", code).stdout.strip() == "[]"


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20Z",
        "2024-02-29T23:59:59.5Z",
        "2023-02-29T10:00:00.000Z",  # no such day
        "2023-11-14T24:00:00.000Z",
        " 2023-11-14T22:13:20.000Z",
        "2023-11-14 22:13:20",
        "yesterday",
        "",
    ],
)
def test_creation_dates_read_while_staging_are_parse_isos(text: str) -> None:
    from glacierfs import staging

    assert staging._creation_time(text) == timestamps.parse_iso(text)


def test_the_whole_tree_hash_is_checked_from_the_ranges_when_fetched_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetched here from the start in ranges of 1 MiB x 2^n, the inventory's tree
    hash is worked out from its ranges' (the file is not read again), and still
    refuses a download that does not match it. Where the job gives none (the
    service gives none for an inventory), nothing is hashed."""
    from glacierfs import inventory as inventory_module
    from glacierfs.testing import ServedEmulator, write_generated_inventory
    from glacierfs.treehash import MiB

    source = tmp_path / "inventory.json"
    write_generated_inventory(source, 6_000, vault="big")  # ~2.4 MB: three ranges of 1 MiB
    run(*GLACIERFS, "emulator", "seed", "--data-dir", tmp_path / "data", "--vault", "big", source)
    server = ServedEmulator(data_dir=tmp_path / "data")

    def no_reading_again(*args: object, **kwargs: object) -> str:
        raise AssertionError("the file was read again for its tree hash")

    hashed: list[int] = []
    real_tree_hash = inventory_module.tree_hash

    def counted_tree_hash(body: bytes) -> str:
        hashed.append(len(body))
        return real_tree_hash(body)

    try:
        monkeypatch.setattr(inventory_module, "file_tree_hash", no_reading_again)
        monkeypatch.setattr(inventory_module, "tree_hash", counted_tree_hash)
        for client, applied in ((GlacierClient, True), (WrongWholeHash, False)):
            hashed.clear()
            catalog = Catalog(tmp_path / f"{client.__name__}.sqlite")
            catalog.add_vault("big")
            state = tmp_path / f"state-{client.__name__}"
            follower = Inventories(client(server.url, credentials=("t", "t")), catalog, state, chunk_size=MiB)
            follower.refresh("big")
            follower.poll_once()
            assert len([e for e in catalog.entries("big") if e.kind == "file"]) == (6_000 if applied else 0)
            assert (catalog.inventory("big")[0] is None) == applied  # refused: still pending
            assert len(hashed) == (0 if applied else 3)  # each range hashed only when there is a hash to check
            catalog.close()
    finally:
        server.stop()


@pytest.mark.parametrize("meanwhile", ["nothing", "an archive recorded", "a file queued to replace one"])
def test_rows_staged_while_downloaded_are_applied_whatever_the_catalog_learns_meanwhile(
    tmp_path: Path, meanwhile: str
) -> None:
    """A first inventory's rows staged by the halves' processes are applied as rows
    staged here are, whatever the catalog learns once they are staged: an archive
    the mount records, a queued file that replaces one."""
    import sqlite3

    from glacierfs import reconcile, staging

    stored = {"state": STORED, "size": 3, "created": "2020-01-01T00:00:00Z"}
    listed = [
        {
            "ArchiveId": letter * 138,
            "ArchiveDescription": names.encode(f"d/{letter.lower()}.bin", 1_600_000_000),
            "CreationDate": "2020-01-01T00:00:00.000Z",
            "Size": 3,
            "SHA256TreeHash": "0" * 64,
        }
        for letter in "ABCDEF"
    ]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"VaultARN": "arn", "ArchiveList": listed}, separators=(",", ":")))
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.add_vault("v")
    early = staging.EarlyStaging(inventory, inventory.stat().st_size)
    reconciler = reconcile.Reconciler(catalog.path, "v", time.time(), expected=len(listed))
    try:
        assert reconciler.stage_file(inventory, early=early) == len(listed)
        if meanwhile == "an archive recorded":
            catalog.put(new_entry("v", "d/b.bin", "file", 0o644).but(archive_id="B" * 138, **stored))
        if meanwhile == "a file queued to replace one":
            db = sqlite3.connect(catalog.path)
            with db:
                db.execute(
                    """INSERT INTO queue (spool_id, vault, path, size, queued, status, replaces)
                    VALUES ('s1', 'v', 'd/c.bin', 5, 0, 'queued', ?)""",
                    ("C" * 138,),
                )
            db.close()
        outcome = reconciler.apply()
    finally:
        reconciler.close()
    files = sorted(e.path for e in catalog.entries("v") if e.kind == "file")
    replaced = "c" if meanwhile == "a file queued to replace one" else ""
    expected = [f"d/{letter}.bin" for letter in "abcdef" if letter != replaced]
    assert files == expected
    assert (outcome.listed, outcome.added) == {
        "nothing": (6, 6),
        "an archive recorded": (6, 5),
        "a file queued to replace one": (5, 5),
    }[meanwhile]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("staging-")] == []
