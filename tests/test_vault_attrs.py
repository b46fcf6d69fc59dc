"""A vault's own settings in Glacier as extended attributes of its directory, a
vault lock that keeps archives, the account's data retrieval policy and
Expedited capacity: on a real mount, with real tools (getfattr, setfattr, rm,
cat), and checked with plain boto3."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, run, wait_for

from .conftest import MiB, archives, boto_client
from .test_reads import put

pytestmark = pytest.mark.mount

FAST = ("--poll-interval", "0.2", "--part-size", str(MiB))
TOPIC = "arn:aws:sns:us-east-1:123456789012:glacier-jobs"
TAG = "user.glacier.tag."


def mount_with(inprocess: Emulator, tmp_path: Path, *extra: str) -> Mount:
    return Mount(tmp_path, inprocess.url, *FAST, *extra)


@pytest.fixture
def mount(inprocess: Emulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    mounted = mount_with(inprocess, tmp_path)
    yield mounted
    mounted.unmount()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"--- glacierfs log ---\n{mounted.log_text()}")


def get(path: Path, name: str) -> str:
    return run("getfattr", "--only-values", "--absolute-names", "-n", name, path).stdout


def refused_get(path: Path, name: str) -> str:
    """getfattr's complaint when reading ``name`` fails."""
    done = run("getfattr", "--only-values", "--absolute-names", "-n", name, path, check=False)
    assert done.returncode != 0, done.stdout
    return done.stderr


def setfattr(path: Path, name: str, value: str) -> subprocess.CompletedProcess[str]:
    return run("setfattr", "-n", name, "-v", value, path, check=False)


def remove(path: Path, name: str) -> subprocess.CompletedProcess[str]:
    return run("setfattr", "-x", name, path, check=False)


def dumped(path: Path) -> dict[str, str]:
    """`getfattr -d`: every name it lists, with its value as getfattr prints it."""
    out = run("getfattr", "-d", "--absolute-names", path).stdout
    return dict(re.findall(r'^(user\.[^=\n]+)="(.*)"$', out, re.MULTILINE))


def lock_policy(days: int) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "keep-a-year",
                    "Principal": "*",
                    "Effect": "Deny",
                    "Action": "glacier:DeleteArchive",
                    "Resource": "arn:aws:glacier:us-east-1:123456789012:vaults/v",
                    "Condition": {"NumericLessThan": {"glacier:ArchiveAgeInDays": str(days)}},
                }
            ],
        }
    )


# Tags ----------------------------------------------------------------------------


def test_tags_are_set_listed_and_removed_as_xattrs(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    vault = mount.path("v")
    vault.mkdir()
    assert setfattr(vault, TAG + "owner", "ops").returncode == 0
    assert setfattr(vault, TAG + "tier", "cold").returncode == 0
    assert boto.list_tags_for_vault(vaultName="v")["Tags"] == {"owner": "ops", "tier": "cold"}
    listed = dumped(vault)
    assert listed[TAG + "owner"] == "ops" and listed[TAG + "tier"] == "cold"
    assert get(vault, TAG + "owner") == "ops"
    # Just read (and kept for a moment): a change through the mount shows at once.
    assert setfattr(vault, TAG + "owner", "platform").returncode == 0
    assert get(vault, TAG + "owner") == "platform"
    removed = remove(vault, TAG + "tier")
    assert removed.returncode == 0, removed.stderr
    assert boto.list_tags_for_vault(vaultName="v")["Tags"] == {"owner": "platform"}
    assert "No such attribute" in refused_get(vault, TAG + "tier")
    assert TAG + "tier" not in dumped(vault)
    assert "No such attribute" in remove(vault, TAG + "tier").stderr
    # Set by another client: seen once the kept value is a moment old.
    boto.add_tags_to_vault(vaultName="v", Tags={"from": "elsewhere"})
    wait_for(lambda: dumped(vault).get(TAG + "from") == "elsewhere", what="a tag set with boto3")

    # Files carry none, and reading theirs costs Glacier nothing.
    path = put(mount, tmp_path, "f.txt", b"data")
    asked = inprocess.calls["ListTagsForVault"]
    assert not [name for name in dumped(path) if name.startswith(TAG)]
    assert "Operation not supported" in refused_get(path, TAG + "owner")
    assert inprocess.calls["ListTagsForVault"] == asked


def test_a_51st_tag_is_e2big_and_a_bad_one_einval(mount: Mount, inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    vault = mount.path("v")
    vault.mkdir()
    boto.add_tags_to_vault(vaultName="v", Tags={f"k{i}": str(i) for i in range(50)})
    refused = setfattr(vault, TAG + "k50", "one too many")
    assert refused.returncode != 0 and "Argument list too long" in refused.stderr
    assert "holds the 50 tags Glacier allows" in mount.log_text()
    assert setfattr(vault, TAG + "k0", "overwriting is no new tag").returncode == 0
    tags = boto.list_tags_for_vault(vaultName="v")["Tags"]
    assert len(tags) == 50 and "k50" not in tags and tags["k0"] == "overwriting is no new tag"
    bad = setfattr(vault, TAG + "aws:reserved", "x")
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr
    assert "Glacier refused tag 'aws:reserved'" in mount.log_text()
    assert "aws:reserved" not in boto.list_tags_for_vault(vaultName="v")["Tags"]


# Notifications and the access policy ------------------------------------------------------


def test_notifications_are_json_to_get_set_and_remove(mount: Mount, inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    vault = mount.path("v")
    vault.mkdir()
    name = "user.glacier.notifications"
    assert "No such attribute" in refused_get(vault, name) and name not in dumped(vault)
    config = {"SNSTopic": TOPIC, "Events": ["ArchiveRetrievalCompleted", "InventoryRetrievalCompleted"]}
    assert setfattr(vault, name, json.dumps(config)).returncode == 0
    assert boto.get_vault_notifications(vaultName="v")["vaultNotificationConfig"] == config
    assert json.loads(get(vault, name)) == config and name in dumped(vault)
    for bad, why in (
        ("{not json", "notifications: not JSON"),
        (json.dumps({"SNSTopic": TOPIC}), 'notifications need "Events"'),
        (json.dumps([TOPIC]), "notifications: a JSON object, not list"),
    ):
        refused = setfattr(vault, name, bad)
        assert refused.returncode != 0 and "Invalid argument" in refused.stderr
        assert f"notifications of vault v not set: {why}" in mount.log_text()
    assert boto.get_vault_notifications(vaultName="v")["vaultNotificationConfig"] == config
    assert remove(vault, name).returncode == 0
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        boto.get_vault_notifications(vaultName="v")
    assert "No such attribute" in refused_get(vault, name)


def test_access_policy_is_json_to_get_set_and_remove(mount: Mount, inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    vault = mount.path("v")
    vault.mkdir()
    name = "user.glacier.access-policy"
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"}, "Action": "glacier:*"}
            ],
        }
    )
    assert setfattr(vault, name, policy).returncode == 0
    assert boto.get_vault_access_policy(vaultName="v")["policy"]["Policy"] == policy
    assert get(vault, name) == policy and name in dumped(vault)
    refused = setfattr(vault, name, '{"Statement": [')
    assert refused.returncode != 0 and "Invalid argument" in refused.stderr
    assert "access policy of vault v not set: an access policy: not JSON" in mount.log_text()
    assert boto.get_vault_access_policy(vaultName="v")["policy"]["Policy"] == policy
    assert remove(vault, name).returncode == 0
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        boto.get_vault_access_policy(vaultName="v")
    assert name not in dumped(vault)
    assert "No such attribute" in remove(vault, name).stderr


# The vault lock and the vault's figures -------------------------------------------------------


def test_lock_shows_its_state_and_policy(mount: Mount, inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    vault = mount.path("v")
    vault.mkdir()
    name = "user.glacier.lock"
    assert get(vault, name) == "none" and dumped(vault)[name] == "none"
    policy = lock_policy(365)
    lock_id = boto.initiate_vault_lock(vaultName="v", policy={"Policy": policy})["lockId"]
    expires = boto.get_vault_lock(vaultName="v")["ExpirationDate"]
    in_progress = wait_for(lambda: get(vault, name) if get(vault, name) != "none" else None, what="the lock")
    assert in_progress == f"in-progress until {expires}\n{policy}"
    boto.complete_vault_lock(vaultName="v", lockId=lock_id)
    wait_for(lambda: get(vault, name) == f"locked\n{policy}", what="the lock, locked")
    for attempt in (setfattr(vault, name, "none"), remove(vault, name)):
        assert attempt.returncode != 0 and "Operation not permitted" in attempt.stderr
    assert boto.get_vault_lock(vaultName="v")["State"] == "Locked"


def test_vault_figures_are_describe_vaults(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    put(mount, tmp_path, "a.bin", b"x" * 1000)
    put(mount, tmp_path, "b.bin", b"y" * 24)
    vault = mount.path("v")
    described = boto.describe_vault(vaultName="v")
    assert "NumberOfArchives" not in described or described["NumberOfArchives"] is None  # no inventory yet
    listed = dumped(vault)
    assert listed["user.glacier.created"] == described["CreationDate"]
    assert not {"user.glacier.archives", "user.glacier.bytes", "user.glacier.last-inventory"} & set(listed)
    assert "No such attribute" in refused_get(vault, "user.glacier.archives")
    assert setfattr(vault, "user.glacier.refresh", "1").returncode == 0  # an inventory job: Glacier counts
    wait_for(lambda: "user.glacier.archives" in dumped(vault), what="the vault's figures")
    described = boto.describe_vault(vaultName="v")
    assert (described["NumberOfArchives"], described["SizeInBytes"]) == (2, 1024)
    assert get(vault, "user.glacier.archives") == "2"
    assert get(vault, "user.glacier.bytes") == "1024"
    assert get(vault, "user.glacier.last-inventory") == described["LastInventoryDate"]
    refused = setfattr(vault, "user.glacier.archives", "3")
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr


# A locked archive ----------------------------------------------------------------------


def test_rm_of_an_archive_the_lock_keeps_is_eacces(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    path = put(mount, tmp_path, "kept.bin", b"keep me")
    created = get(path, "user.glacier.created")
    archive_id = get(path, "user.glacier.archive-id")
    lock_id = boto.initiate_vault_lock(vaultName="v", policy={"Policy": lock_policy(365)})["lockId"]
    boto.complete_vault_lock(vaultName="v", lockId=lock_id)
    refused = run("rm", path, check=False)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    log = mount.log_text()
    assert "the vault lock of v (locked) protects archive" in log
    assert f"which is 0 days old (stored {created}); its policy keeps archives younger than 365 days" in log
    assert path.exists() and get(path, "user.glacier.state") == "stored"
    assert [a["ArchiveId"] for a in archives(inprocess.url, "v")] == [archive_id]

    # Glacier still holds it, and the catalog knows: the next inventory neither hides nor repeats it.
    assert setfattr(mount.path("v"), "user.glacier.refresh", "1").returncode == 0
    wait_for(lambda: "pending" not in get(mount.path("v"), "user.glacier.inventory"), what="the inventory")
    assert sorted(os.listdir(mount.path("v"))) == ["kept.bin"]

    # Replaced: the new archive is stored, and the old one the lock keeps comes back by the next inventory.
    (tmp_path / "new").write_bytes(b"a new version")
    run("cp", tmp_path / "new", path)
    assert get(path, "user.glacier.archive-id") != archive_id
    assert f"could not delete archive {archive_id} of replaced v/kept.bin" in mount.log_text()
    assert setfattr(mount.path("v"), "user.glacier.refresh", "1").returncode == 0
    wait_for(lambda: len(os.listdir(mount.path("v"))) == 2, what="the kept archive, listed again")
    older = [name for name in os.listdir(mount.path("v")) if name != "kept.bin"]
    assert older[0].startswith("kept.bin.older-")
    assert get(mount.path("v", older[0]), "user.glacier.archive-id") == archive_id


# The account's data retrieval policy ------------------------------------------------------


def test_a_read_the_retrieval_policy_refuses_is_edquot(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    boto = boto_client(inprocess.url)
    path = put(mount, tmp_path, "big.bin", b"z" * (2 * MiB))
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "BytesPerHour", "BytesPerHour": MiB}]})
    refused = run("cat", path, check=False)
    assert refused.returncode != 0 and "Disk quota exceeded" in refused.stderr
    log = mount.log_text()
    assert "the account's data retrieval policy (BytesPerHour: at most 1048576 bytes retrieved an hour)" in log
    assert "not glacierfs's cost guard (--max-retrieval-bytes)" in log
    assert boto.list_jobs(vaultName="v")["JobList"] == []
    status = run(*GLACIERFS, "status", mount.mountpoint).stdout.splitlines()
    budget = next(i for i, line in enumerate(status) if "retrieval budget left" in line)
    assert status[budget + 1] == (
        "  account's data retrieval policy (set in Glacier): BytesPerHour: at most 1048576 bytes retrieved an hour"
    )
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "None"}]})
    started = run("cat", path, check=False)  # the cost guard never counted the refused job
    assert "Resource temporarily unavailable" in started.stderr or started.returncode == 0
    assert len(boto.list_jobs(vaultName="v")["JobList"]) == 1


# Expedited capacity ----------------------------------------------------------------------


def test_expedited_without_capacity_falls_back_to_standard(inprocess: Emulator, tmp_path: Path) -> None:
    mount = mount_with(inprocess, tmp_path, "--tier", "Expedited")
    try:
        path = put(mount, tmp_path, "hurry.bin", b"h" * 1000)
        inprocess.settings.expedited_capacity = "none"
        inprocess.settings.job_delay = 3600.0
        refused = run("cat", path, check=False)
        assert "Resource temporarily unavailable" in refused.stderr
        jobs = boto_client(inprocess.url).list_jobs(vaultName="v")["JobList"]
        assert [job["Tier"] for job in jobs] == ["Standard"]
        # One refused Expedited request, not botocore's five attempts at a 503, then one at Standard.
        assert inprocess.calls["InitiateJob"] == 2
        assert f"retrieving job={jobs[0]['JobId']} tier=Standard" in get(path, "user.glacier.state")
        assert "no Expedited capacity for archive" in mount.log_text()
        assert "retrieving it at the Standard tier instead" in mount.log_text()
    finally:
        mount.unmount()


def test_no_tier_fallback_refuses_until_capacity_is_bought(inprocess: Emulator, tmp_path: Path) -> None:
    mount = mount_with(inprocess, tmp_path, "--tier", "Expedited", "--no-tier-fallback")
    try:
        boto = boto_client(inprocess.url)
        path = put(mount, tmp_path, "hurry.bin", b"h" * 1000)
        inprocess.settings.expedited_capacity = "none"
        inprocess.settings.job_delay = 3600.0
        refused = run("cat", path, check=False)
        assert refused.returncode != 0 and "Resource temporarily unavailable" in refused.stderr
        assert inprocess.calls["InitiateJob"] == 1
        assert boto.list_jobs(vaultName="v")["JobList"] == []
        assert "--no-tier-fallback keeps it from the Standard tier" in mount.log_text()
        assert get(path, "user.glacier.state") == "stored"
        boto.purchase_provisioned_capacity()
        run("cat", path, check=False)
        assert [job["Tier"] for job in boto.list_jobs(vaultName="v")["JobList"]] == ["Expedited"]
        assert "tier=Expedited" in get(path, "user.glacier.state")
    finally:
        mount.unmount()


def test_status_lists_provisioned_capacity(mount: Mount, inprocess: Emulator) -> None:
    status = run(*GLACIERFS, "status", mount.mountpoint).stdout
    assert "provisioned capacity units: none" in status
    boto = boto_client(inprocess.url)
    capacity_id = boto.purchase_provisioned_capacity()["capacityId"]
    unit = boto.list_provisioned_capacity()["ProvisionedCapacityList"][0]
    status = run(*GLACIERFS, "status", mount.mountpoint).stdout
    assert "provisioned capacity units: 1" in status
    assert f"{capacity_id}  since {unit['StartDate']}, expires {unit['ExpirationDate']}" in status


def test_status_does_not_ask_a_glacier_that_is_not_answering(tmp_path: Path) -> None:
    emulator = ServedEmulator()
    mount = Mount(tmp_path, emulator.url, "--max-attempts", "1", "--vault-list-ttl", "0")
    try:
        assert "account's data retrieval policy (set in Glacier): None: no limit" in status_of(mount)
        emulator.stop()
        with pytest.raises(OSError):
            mount.path("v").mkdir()  # Glacier is lost
        status = status_of(mount)
        assert f"account's data retrieval policy (set in Glacier): unknown (Glacier at {emulator.url}" in status
        assert "is not answering" in status and "provisioned capacity: unknown" in status
    finally:
        mount.unmount()
        emulator.stop()


def status_of(mount: Mount) -> str:
    return run(*GLACIERFS, "status", mount.mountpoint, check=False).stdout
