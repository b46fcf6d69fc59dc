"""Vaults of many archives: the emulator seeded from an inventory (``glacierfs
emulator seed``), its synthetic bodies and streamed inventories, and a vault of
200,000 archives reconciled through a real mount."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest

from glacierfs import names, timestamps
from glacierfs.testing import (
    FORMATS,
    GLACIERFS,
    Mount,
    ServedEmulator,
    generated_archive,
    run,
    wait_for,
    write_generated_inventory,
)
from glacierfs.treehash import MiB, tree_hash

from .conftest import boto_client

FAST = ("--poll-interval", "0.2", "--manifest-delay", "0.3")


def inventory_of(boto, vault: str, output_format: str = "JSON") -> bytes:  # type: ignore[no-untyped-def]
    job = boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval", "Format": output_format})
    return boto.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read()


def seed(data: Path, vault: str, inventory: Path) -> str:
    return run(*GLACIERFS, "emulator", "seed", "--data-dir", data, "--vault", vault, inventory).stdout


def test_seed_keeps_ids_descriptions_dates_and_sizes(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    write_generated_inventory(inventory, 300)
    given = json.loads(inventory.read_text())["ArchiveList"]
    given[1]["Size"] = 5 * MiB + 17  # a body of several leaves
    inventory.write_text(json.dumps({"VaultARN": "arn", "InventoryDate": "2026-01-01T00:00:00Z", "ArchiveList": given}))
    assert "seeded vault big with 300 archive(s)" in seed(tmp_path / "data", "big", inventory)
    server = ServedEmulator(data_dir=tmp_path / "data")
    try:
        boto = boto_client(server.url)
        listed = json.loads(inventory_of(boto, "big"))["ArchiveList"]
        assert boto.describe_vault(vaultName="big")["NumberOfArchives"] == 300  # as of that inventory
        key = lambda a: a["ArchiveId"]  # noqa: E731
        for mine, theirs in zip(sorted(given, key=key), sorted(listed, key=key), strict=True):
            assert [mine[k] for k in ("ArchiveId", "ArchiveDescription", "Size")] == [
                theirs[k] for k in ("ArchiveId", "ArchiveDescription", "Size")
            ]
            assert timestamps.parse_iso(mine["CreationDate"]) == timestamps.parse_iso(theirs["CreationDate"])
        # The bodies are zeros, made on demand, and hash to what the inventory says.
        big = next(a for a in listed if a["ArchiveId"] == given[1]["ArchiveId"])
        retrieval = {"Type": "archive-retrieval", "ArchiveId": big["ArchiveId"]}
        job = boto.initiate_job(vaultName="big", jobParameters=retrieval)
        output = boto.get_job_output(vaultName="big", jobId=job["jobId"])
        body = output["body"].read()
        assert body == bytes(5 * MiB + 17)
        assert output["checksum"] == tree_hash(body) == big["SHA256TreeHash"]
        ranged = boto.get_job_output(vaultName="big", jobId=job["jobId"], range=f"bytes={MiB}-{2 * MiB - 1}")
        assert ranged["checksum"] == tree_hash(ranged["body"].read()) == tree_hash(bytes(MiB))
        assert not list((tmp_path / "data" / "archives").iterdir())  # no disk used for bodies
    finally:
        server.stop()


def test_seed_reads_csv_and_seeding_twice_is_seeding_once(tmp_path: Path) -> None:
    rows = [
        ("id-one", "plain.txt", "2020-01-02T03:04:05.000Z", 10),
        ("id-two", 'a "quoted", name', "2021-01-02T03:04:05.000Z", 20),
    ]
    inventory = tmp_path / "inventory.csv"
    with open(inventory, "w") as out:
        out.write("ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\n")
        for archive_id, description, created, size in rows:
            quoted = description.replace('"', '\\"')
            out.write(f'{archive_id},"{quoted}",{created},{size},{"0" * 64}\n')
    for _ in range(2):
        assert "with 2 archive(s)" in seed(tmp_path / "data", "csv-vault", inventory)
    server = ServedEmulator(data_dir=tmp_path / "data")
    try:
        listed = json.loads(inventory_of(boto_client(server.url), "csv-vault"))["ArchiveList"]
        assert sorted((a["ArchiveId"], a["ArchiveDescription"], a["Size"]) for a in listed) == [
            (archive_id, description, size) for archive_id, description, _, size in rows
        ]
    finally:
        server.stop()


def test_seed_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("not,an,inventory\n")
    result = run(*GLACIERFS, "emulator", "seed", "--data-dir", tmp_path / "d", "--vault", "v", bad, check=False)
    assert result.returncode == 1 and "not a Glacier CSV inventory" in result.stderr
    result = run(*GLACIERFS, "emulator", "seed", "--data-dir", tmp_path / "d", "--vault", "bad/name", bad, check=False)
    assert result.returncode == 1 and "is not a vault name" in result.stderr


def test_the_emulators_inventory_of_many_archives_is_whole(tmp_path: Path) -> None:
    """Worded a page of 10,000 archives at a time: every archive once, JSON and CSV."""
    inventory = tmp_path / "inventory.json"
    write_generated_inventory(inventory, 25_001)
    seed(tmp_path / "data", "many", inventory)
    server = ServedEmulator(data_dir=tmp_path / "data")
    try:
        boto = boto_client(server.url)
        listed = json.loads(inventory_of(boto, "many"))["ArchiveList"]
        assert len({a["ArchiveId"] for a in listed}) == len(listed) == 25_001
        rows = list(csv.DictReader(io.StringIO(inventory_of(boto, "many", "CSV").decode())))
        assert len(rows) == 25_001 and rows[0]["ArchiveId"] == listed[0]["ArchiveId"]
    finally:
        server.stop()


COUNT = 200_000


@pytest.mark.slow
@pytest.mark.mount
def test_a_vault_of_200000_archives_through_the_mount(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    write_generated_inventory(inventory, COUNT)
    seed(tmp_path / "data", "big", inventory)
    server = ServedEmulator(data_dir=tmp_path / "data")
    mount = Mount(tmp_path, server.url, *FAST)
    try:
        vault = mount.path("big")
        os.listdir(vault)  # the first look asks for the inventory
        started = time.monotonic()
        wait_for(
            lambda: timestamps.parse_iso(os.getxattr(vault, "user.glacier.inventory").decode()) is not None,
            timeout=120,
            what="the inventory",
        )
        applied = time.monotonic() - started
        count = sum(len(files) for _, _, files in os.walk(vault))
        assert count == COUNT
        assert sorted(os.listdir(vault))[:3] == ["C:", "_unnamed", "dir000"]
        assert len(os.listdir(vault / "_unnamed")) == 2 * COUNT // 100
        # A sample of every format, at the start and the end of the vault.
        for base in (0, COUNT - 100):
            for offset in range(len(FORMATS) + 1):
                index = base + offset
                item, path = generated_archive(index)
                shown = vault / (path if path is not None else f"_unnamed/{item['ArchiveId']}")
                assert shown.stat().st_size == item["Size"], (index, path)
                decoded = names.decode(str(item["ArchiveDescription"]))
                if decoded is not None and decoded.mtime and path and ".older-" not in path:
                    assert int(shown.stat().st_mtime) == int(decoded.mtime), path
        assert "inventory of vault big dated" in mount.log_text()
        print(f"{COUNT:,} archives applied in {applied:.1f} s")
    finally:
        mount.unmount()
        server.stop()
