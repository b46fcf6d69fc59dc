"""Names the catalog must never lose or hide: other accounts behind one endpoint,
vaults missing from a listing, outages, collisions; and the small promises
around them (one pending inventory, private directories, one-line logs,
`cp -a` into a vault). Each checked on a real mount, with plain boto3."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from glacierfs.catalog import DIRECTORY, FILE, Catalog, new_entry
from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, run, wait_for

from .conftest import archives, boto_client, environment

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--manifest-delay", "0.3", "--cleanup-interval", "0.5")
DEFAULT_ACCOUNT = "123456789012"  # moto's
OTHER_ACCOUNT = "222222222222"


def other_account(url: str) -> dict[str, str]:
    """Credentials of a second account: moto ties the keys of an assumed role to
    the role's account, for STS and Glacier alike."""
    import boto3

    sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1")
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/glacierfs-test"
    credentials = sts.assume_role(RoleArn=role, RoleSessionName="other-account")["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def make_names(mount: Mount) -> None:
    """A rename, an empty file and an empty directory: names only the catalog holds."""
    mount.path("v").mkdir()
    mount.path("v", "first").write_bytes(b"stored bytes")
    mount.path("v", "first").rename(mount.path("v", "renamed"))
    mount.path("v", "empty").touch()
    mount.path("v", "folder").mkdir()


NAMES = ["empty", "folder", "renamed"]


def test_another_account_on_the_same_endpoint_loses_no_name(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        make_names(mount)
    finally:
        mount.unmount()

    with environment(**other_account(inprocess.url)):
        other = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert os.listdir(other.mountpoint) == []  # the other account has no vault
        other.path("w").mkdir()
    finally:
        other.unmount()
    assert [v["VaultARN"] for v in boto_client(inprocess.url).list_vaults()["VaultList"]] == [
        f"arn:aws:glacier:us-east-1:{DEFAULT_ACCOUNT}:vaults/v"
    ]

    again = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert os.listdir(again.mountpoint) == ["v"]
        assert sorted(os.listdir(again.path("v"))) == NAMES
        assert again.path("v", "empty").stat().st_size == 0
        assert again.path("v", "folder").is_dir()
        assert again.path("v", "renamed").stat().st_size == len(b"stored bytes")
    finally:
        again.unmount()
    catalogs = sorted(path.name for path in mount.state.glob("catalog-*.sqlite"))
    assert len(catalogs) == 2, catalogs
    assert DEFAULT_ACCOUNT in catalogs[0] and OTHER_ACCOUNT in catalogs[1]
    assert f"account {OTHER_ACCOUNT}" in again.log_text()
    assert sum(a["Size"] == len(b"stored bytes") for a in archives(inprocess.url, "v")) == 1


def test_a_catalog_keyed_by_endpoint_is_adopted_on_upgrade(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        make_names(mount)
    finally:
        mount.unmount()
    [catalog] = mount.state.glob("catalog-*.sqlite")
    # The name releases before the account keying gave it: region, endpoint, profile.
    endpoint, region = inprocess.url, "us-east-1"
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{region}-{endpoint}").strip("_")[:80]
    digest = hashlib.sha256(f"{region}|{endpoint}|None".encode()).hexdigest()[:8]
    legacy = catalog.with_name(f"catalog-{readable}-{digest}.sqlite")
    catalog.rename(legacy)

    again = Mount(tmp_path, inprocess.url, *FAST)
    try:
        assert sorted(os.listdir(again.path("v"))) == NAMES
    finally:
        again.unmount()
    assert "adopted the catalog" in again.log_text()
    assert [path.name for path in mount.state.glob("catalog-*.sqlite")] == [catalog.name]


def test_a_vault_missing_from_a_listing_keeps_its_names(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST, "--vault-list-ttl", "0")
    try:
        mount.path("v").mkdir()
        mount.path("v", "empty").touch()
        mount.path("v", "folder").mkdir()
        boto = boto_client(inprocess.url)
        boto.delete_vault(vaultName="v")  # nothing stored in it: Glacier lets it go

        assert os.listdir(mount.mountpoint) == []
        assert not mount.path("v").exists()
        assert "vault v is missing from Glacier's vault list" in mount.log_text()
        status = run(*GLACIERFS, "status", mount.mountpoint).stdout
        assert "vault v missing from Glacier's vault list" in status and "2 name(s) kept" in status

        boto.create_vault(vaultName="v")
        assert os.listdir(mount.mountpoint) == ["v"]
        assert sorted(os.listdir(mount.path("v"))) == ["empty", "folder"]
        assert "vault v is listed again" in mount.log_text()
        assert "vault list" not in run(*GLACIERFS, "status", mount.mountpoint).stdout
    finally:
        mount.unmount()


def test_a_catalog_from_before_gone_vaults_keeps_names_of_missing_vaults(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE vaults (name TEXT PRIMARY KEY, created TEXT NOT NULL DEFAULT '')")
    old.execute("INSERT INTO vaults (name) VALUES ('v')")
    old.commit()
    old.close()
    catalog = Catalog(path)
    try:
        catalog.put(new_entry("v", "d", DIRECTORY, 0o755))
        catalog.put(new_entry("v", "d/f", FILE, 0o644))
        catalog.set_vaults([])
        assert catalog.vaults() == [] and not catalog.has_vault("v")
        assert [(name, kept) for name, _, kept in catalog.gone_vaults()] == [("v", 2)]
        catalog.set_vaults(["v"])
        assert catalog.vaults() == ["v"] and catalog.child_names("v", "d") == ["f"]
        catalog.remove_vault("v")  # rmdir of a vault still forgets it
        assert catalog.gone_vaults() == [] and catalog.vault_is_empty("v")
    finally:
        catalog.close()


def test_unnamed_archives_beside_a_file_named_unnamed(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        mount.path("v", "_unnamed").write_bytes(b"the user's own file")
        archive_id = boto_client(inprocess.url).upload_archive(
            vaultName="v", archiveDescription="", body=b"no name at all"
        )["archiveId"]
        run(*GLACIERFS, "refresh", mount.path("v"))
        wait_for(lambda: len(os.listdir(mount.path("v"))) == 2, what="the inventory")
        assert sorted(os.listdir(mount.path("v"))) == ["_unnamed", "_unnamed-2"]
        assert mount.path("v", "_unnamed").is_file()
        assert os.listdir(mount.path("v", "_unnamed-2")) == [archive_id]
        assert mount.path("v", "_unnamed-2", archive_id).stat().st_size == len(b"no name at all")
        assert "holds a file named _unnamed" in mount.log_text()
    finally:
        mount.unmount()


def test_listing_the_root_during_an_outage_serves_the_last_list(tmp_path: Path) -> None:
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    mount = Mount(tmp_path, server.url, *FAST, "--max-attempts", "2", "--vault-list-ttl", "0.2")
    try:
        mount.path("v").mkdir()
        mount.path("w").mkdir()
        server.stop()
        for _ in range(3):
            time.sleep(0.3)  # past the vault list's TTL each time
            assert sorted(os.listdir(mount.mountpoint)) == ["v", "w"]
        assert mount.log_text().count("cannot list the vaults") == 1
    finally:
        mount.unmount()
        server.stop()


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


def test_existing_state_and_cache_directories_are_made_private(inprocess: Emulator, tmp_path: Path) -> None:
    state, cache = tmp_path / "state", tmp_path / "cache"
    for directory in (state, cache):
        directory.mkdir(mode=0o755)
        os.chmod(directory, 0o755)
    mount = Mount(tmp_path, inprocess.url, *FAST, "--cache-dir", str(cache))
    try:
        for directory in (state, cache):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    finally:
        mount.unmount()


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ")


def test_a_name_with_a_newline_stays_on_one_log_line(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, *FAST)
    try:
        mount.path("v").mkdir()
        mount.path("v", "evil\n2000-01-01 00:00:00,000 ERROR forged: line").write_bytes(b"x")
        mount.path("v", "tab\tand\rcarriage").write_bytes(b"y")
    finally:
        mount.unmount()
    log = mount.log_text()
    assert "evil\\n2000-01-01" in log and "tab\\tand\\rcarriage" in log
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
        assert "ERROR forged" not in line[:40], line


def test_cp_a_and_rsync_a_into_a_vault_succeed(inprocess: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha")
    (source / "sub" / "b.txt").write_bytes(b"beta")
    os.chmod(source, 0o750)
    mount = Mount(tmp_path, inprocess.url, "--poll-interval", "0.2")  # no manifest archive meanwhile
    try:
        mount.path("v").mkdir()
        mount.path("w").mkdir()
        subprocess.run(["cp", "-a", f"{source}/.", str(mount.path("v"))], check=True, capture_output=True)
        subprocess.run(["rsync", "-a", f"{source}/", str(mount.path("w"))], check=True, capture_output=True)
        for vault in ("v", "w"):
            assert mount.path(vault, "a.txt").stat().st_size == 5
            assert mount.path(vault, "sub", "b.txt").stat().st_size == 4
            assert sorted(a["Size"] for a in archives(inprocess.url, vault)) == [4, 5]
        assert stat.S_IMODE(mount.path("v").stat().st_mode) == 0o755  # a no-op, not a change
        with pytest.raises(PermissionError):
            os.chown(mount.path("v"), os.getuid() + 4242, -1)  # another owner is still refused
    finally:
        mount.unmount()
