"""Names the catalog must never lose or hide: other accounts behind one endpoint,
vaults missing from a listing, outages, collisions; and the small promises
around them (one pending inventory, private directories, one-line logs,
`cp -a` into a vault). Each checked on a real mount, with plain boto3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator

from .conftest import boto_client
from .harness import GLACIERFS, Mount, run, wait_for

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--manifest-delay", "0.3", "--cleanup-interval", "0.5")


def test_unnamed_archives_beside_a_file_named_unnamed(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        mount.path("v", "_unnamed").write_bytes(b"the user's own file")
        archive_id = boto_client(inprocess.url).upload_archive(
            vaultName="v", archiveDescription="", body=b"no name at all")["archiveId"]
        run(*GLACIERFS, "refresh", mount.path("v"))
        wait_for(lambda: len(os.listdir(mount.path("v"))) == 2, what="the inventory")
        assert sorted(os.listdir(mount.path("v"))) == ["_unnamed", "_unnamed-2"]
        assert mount.path("v", "_unnamed").is_file()
        assert os.listdir(mount.path("v", "_unnamed-2")) == [archive_id]
        assert mount.path("v", "_unnamed-2", archive_id).stat().st_size == len(b"no name at all")
        assert "holds a file named _unnamed" in mount.log_text()
    finally:
        mount.unmount()


def test_refresh_while_an_inventory_is_pending_reuses_it(inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="legacy")
    boto.upload_archive(vaultName="legacy", archiveDescription="old.txt", body=b"old")
    inprocess.settings.job_delay = 3600
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        os.listdir(mount.path("legacy"))  # the first look asks for an inventory
        result = run(*GLACIERFS, "refresh", *[mount.path("legacy")] * 8)
        assert result.stdout.count("pending job=") == 8
        jobs = boto.list_jobs(vaultName="legacy")["JobList"]
        assert [job["Action"] for job in jobs] == ["InventoryRetrieval"]
        assert all(jobs[0]["JobId"] in line for line in result.stdout.splitlines())
    finally:
        mount.unmount()
