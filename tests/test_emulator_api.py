"""The rest of the vault API in the emulator, and where it used to answer differently from the service.

Plain boto3 (and the AWS CLI where it is installed) against the emulator, as the
Glacier API reference describes each call. Tests taking ``boto``/``endpoint`` run
twice: against the in-process emulator and against ``glacierfs emulator`` in a
subprocess. Knobs (the clock, Expedited capacity, the free tier) are turned over
HTTP (``control.configure``), the same way for both, and every test ends with a
reset, so account-wide state (retrieval policy, capacity units) never leaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from glacierfs.emulator import Emulator, control
from glacierfs.testing import ServedEmulator
from glacierfs.treehash import tree_hash

from .conftest import MiB, boto_client
from .test_emulator import data_of, error_code, inventory, upload

DAY = 24 * 3600
TOPIC = "arn:aws:sns:us-east-1:123456789012:glacier-jobs"


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used an emulator, give it back empty and with its own settings."""
    url = request.getfixturevalue("endpoint") if "endpoint" in request.fixturenames else None
    yield
    if url is not None:
        control.reset(url)


def clock(endpoint: str, seconds: float) -> None:
    """Move the emulator's clock to ``seconds`` past the wall clock."""
    control.configure(endpoint, clock_offset=float(seconds))


def lock_policy(days: int, operator: str = "NumericLessThan") -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "keep-for-a-while",
                    "Principal": "*",
                    "Effect": "Deny",
                    "Action": "glacier:DeleteArchive",
                    "Resource": "arn:aws:glacier:us-east-1:123456789012:vaults/*",
                    "Condition": {operator: {"glacier:ArchiveAgeInDays": str(days)}},
                }
            ],
        }
    )


def raw_body(boto, operation: str, call: Callable[[], Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The JSON the emulator sent for one call, nulls included (botocore drops them when parsing)."""
    seen: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        seen.append(http_response.content)

    boto.meta.events.register(f"after-call.glacier.{operation}", keep)
    try:
        call()
    finally:
        boto.meta.events.unregister(f"after-call.glacier.{operation}", keep)
    return dict(json.loads(seen[-1]))


def retrieve(boto, vault: str, archive_id: str, tier: str = "Standard", **extra: str) -> str:  # type: ignore[no-untyped-def]
    params = {"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": tier, **extra}
    return str(boto.initiate_job(vaultName=vault, jobParameters=params)["jobId"])


def refused(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(ClientError) as excinfo:
        call()
    return error_code(excinfo)


# Tags ------------------------------------------------------------------------


def test_tags_are_added_listed_overwritten_and_removed(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    assert boto.list_tags_for_vault(vaultName=vault)["Tags"] == {}
    boto.add_tags_to_vault(vaultName=vault, Tags={"owner": "ops", "tier": "cold"})
    boto.add_tags_to_vault(vaultName=vault, Tags={"tier": "colder"})
    assert boto.list_tags_for_vault(vaultName=vault)["Tags"] == {"owner": "ops", "tier": "colder"}
    boto.remove_tags_from_vault(vaultName=vault, TagKeys=["owner", "never-set"])
    assert boto.list_tags_for_vault(vaultName=vault)["Tags"] == {"tier": "colder"}
    assert refused(lambda: boto.list_tags_for_vault(vaultName="no-such-vault")) == (404, "ResourceNotFoundException")


def test_a_vault_holds_at_most_50_tags(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    boto.add_tags_to_vault(vaultName=vault, Tags={f"k{i}": str(i) for i in range(50)})
    boto.add_tags_to_vault(vaultName=vault, Tags={"k0": "overwriting is not one more"})
    assert refused(lambda: boto.add_tags_to_vault(vaultName=vault, Tags={"k50": "one too many"})) == (
        400,
        "LimitExceededException",
    )
    tags = boto.list_tags_for_vault(vaultName=vault)["Tags"]
    assert len(tags) == 50 and "k50" not in tags and tags["k0"] == "overwriting is not one more"


@pytest.mark.parametrize("tags", [{"aws:reserved": "x"}, {"k" * 129: "x"}, {"key": "v" * 257}])
def test_invalid_tags_are_refused(boto, vault: str, tags: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    assert refused(lambda: boto.add_tags_to_vault(vaultName=vault, Tags=tags)) == (
        400,
        "InvalidParameterValueException",
    )
    assert boto.list_tags_for_vault(vaultName=vault)["Tags"] == {}


# Notifications -----------------------------------------------------------------


def test_notifications_are_set_got_and_deleted(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    # Before any is set: the service's JSON 404, not an HTML page from a missing route.
    missing = raw_body(
        boto, "GetVaultNotifications", lambda: refused(lambda: boto.get_vault_notifications(vaultName=vault))
    )
    assert missing["code"] == "ResourceNotFoundException"
    config = {"SNSTopic": TOPIC, "Events": ["ArchiveRetrievalCompleted", "InventoryRetrievalCompleted"]}
    boto.set_vault_notifications(vaultName=vault, vaultNotificationConfig=config)
    assert boto.get_vault_notifications(vaultName=vault)["vaultNotificationConfig"] == config
    boto.delete_vault_notifications(vaultName=vault)
    boto.delete_vault_notifications(vaultName=vault)  # nothing left to delete is no error
    assert refused(lambda: boto.get_vault_notifications(vaultName=vault)) == (404, "ResourceNotFoundException")


@pytest.mark.parametrize(
    "config",
    [
        {"SNSTopic": TOPIC, "Events": ["ArchiveDeleted"]},
        {"SNSTopic": "not-a-topic", "Events": ["ArchiveRetrievalCompleted"]},
        {"SNSTopic": TOPIC, "Events": []},
    ],
)
def test_invalid_notifications_are_refused(boto, vault: str, config: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    assert refused(lambda: boto.set_vault_notifications(vaultName=vault, vaultNotificationConfig=config)) == (
        400,
        "InvalidParameterValueException",
    )


def test_a_jobs_sns_topic_is_echoed(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"notify me")
    with_topic = retrieve(boto, vault, archive_id, SNSTopic=TOPIC)
    without = retrieve(boto, vault, archive_id)
    assert boto.describe_job(vaultName=vault, jobId=with_topic)["SNSTopic"] == TOPIC
    assert raw_body(boto, "DescribeJob", lambda: boto.describe_job(vaultName=vault, jobId=without))["SNSTopic"] is None
    listed = {job["JobId"]: job.get("SNSTopic") for job in boto.list_jobs(vaultName=vault)["JobList"]}
    assert listed == {with_topic: TOPIC, without: None}
    assert refused(lambda: retrieve(boto, vault, archive_id, SNSTopic="nope")) == (
        400,
        "InvalidParameterValueException",
    )


# Access policy -------------------------------------------------------------------


def test_access_policy_is_set_got_and_deleted(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    assert refused(lambda: boto.get_vault_access_policy(vaultName=vault)) == (404, "ResourceNotFoundException")
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"}, "Action": "glacier:*"}
            ],
        }
    )
    boto.set_vault_access_policy(vaultName=vault, policy={"Policy": policy})
    assert boto.get_vault_access_policy(vaultName=vault)["policy"]["Policy"] == policy
    assert refused(lambda: boto.set_vault_access_policy(vaultName=vault, policy={"Policy": "{not json"})) == (
        400,
        "InvalidParameterValueException",
    )
    assert boto.get_vault_access_policy(vaultName=vault)["policy"]["Policy"] == policy
    boto.delete_vault_access_policy(vaultName=vault)
    boto.delete_vault_access_policy(vaultName=vault)
    assert refused(lambda: boto.get_vault_access_policy(vaultName=vault)) == (404, "ResourceNotFoundException")


# Vault lock ----------------------------------------------------------------------


def test_vault_lock_goes_from_in_progress_to_locked_with_its_id(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    assert refused(lambda: boto.get_vault_lock(vaultName=vault)) == (404, "ResourceNotFoundException")
    policy = lock_policy(365)
    lock_id = boto.initiate_vault_lock(vaultName=vault, policy={"Policy": policy})["lockId"]
    lock = boto.get_vault_lock(vaultName=vault)
    assert (lock["State"], lock["Policy"]) == ("InProgress", policy)
    created = datetime.fromisoformat(lock["CreationDate"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(lock["ExpirationDate"].replace("Z", "+00:00")) - created == timedelta(days=1)
    assert refused(lambda: boto.initiate_vault_lock(vaultName=vault, policy={"Policy": policy})) == (
        403,
        "AccessDeniedException",
    )
    assert refused(lambda: boto.complete_vault_lock(vaultName=vault, lockId="wrong" + lock_id)) == (
        400,
        "InvalidParameterValueException",
    )
    assert boto.get_vault_lock(vaultName=vault)["State"] == "InProgress"
    boto.complete_vault_lock(vaultName=vault, lockId=lock_id)
    boto.complete_vault_lock(vaultName=vault, lockId=lock_id)  # idempotent with the right id
    locked = raw_body(boto, "GetVaultLock", lambda: boto.get_vault_lock(vaultName=vault))
    assert (locked["State"], locked["ExpirationDate"]) == ("Locked", None)
    # A locked lock can never change, be aborted, or be replaced.
    assert refused(lambda: boto.complete_vault_lock(vaultName=vault, lockId="wrong" + lock_id)) == (
        403,
        "AccessDeniedException",
    )
    assert refused(lambda: boto.abort_vault_lock(vaultName=vault)) == (403, "AccessDeniedException")
    assert refused(lambda: boto.initiate_vault_lock(vaultName=vault, policy={"Policy": policy})) == (
        403,
        "AccessDeniedException",
    )
    assert boto.get_vault_lock(vaultName=vault)["State"] == "Locked"


def test_an_in_progress_lock_can_be_aborted(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    lock_id = boto.initiate_vault_lock(vaultName=vault, policy={"Policy": lock_policy(30)})["lockId"]
    boto.abort_vault_lock(vaultName=vault)
    boto.abort_vault_lock(vaultName=vault)  # nothing in progress: no error
    assert refused(lambda: boto.get_vault_lock(vaultName=vault)) == (404, "ResourceNotFoundException")
    assert refused(lambda: boto.complete_vault_lock(vaultName=vault, lockId=lock_id)) == (
        400,
        "InvalidParameterValueException",
    )
    archive_id = upload(boto, vault, b"free to go")
    boto.delete_archive(vaultName=vault, archiveId=archive_id)  # the aborted policy no longer applies


def test_an_in_progress_lock_expires_after_24_hours(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    lock_id = boto.initiate_vault_lock(vaultName=vault, policy={"Policy": lock_policy(30)})["lockId"]
    clock(endpoint, DAY - 60)
    assert boto.get_vault_lock(vaultName=vault)["State"] == "InProgress"
    clock(endpoint, DAY + 1)
    assert refused(lambda: boto.get_vault_lock(vaultName=vault)) == (404, "ResourceNotFoundException")
    assert refused(lambda: boto.complete_vault_lock(vaultName=vault, lockId=lock_id)) == (
        400,
        "InvalidParameterValueException",
    )
    boto.initiate_vault_lock(vaultName=vault, policy={"Policy": lock_policy(30)})  # a new one may start


@pytest.mark.parametrize("operator", ["NumericLessThan", "NumericLessThanEquals"])
def test_the_lock_policy_keeps_young_archives(boto, endpoint: str, vault: str, operator: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"retained")
    lock_id = boto.initiate_vault_lock(vaultName=vault, policy={"Policy": lock_policy(365, operator)})["lockId"]
    # In force while in progress already, so a lock can be tried before it is final.
    assert refused(lambda: boto.delete_archive(vaultName=vault, archiveId=archive_id)) == (
        403,
        "AccessDeniedException",
    )
    boto.complete_vault_lock(vaultName=vault, lockId=lock_id)
    clock(endpoint, 365 * DAY + 60)  # 365 days old: still kept by <=, free under <
    if operator == "NumericLessThanEquals":
        assert refused(lambda: boto.delete_archive(vaultName=vault, archiveId=archive_id)) == (
            403,
            "AccessDeniedException",
        )
        clock(endpoint, 366 * DAY + 60)
    assert [a["ArchiveId"] for a in json.loads(inventory(boto, vault))["ArchiveList"]] == [archive_id]
    boto.delete_archive(vaultName=vault, archiveId=archive_id)
    assert json.loads(inventory(boto, vault))["ArchiveList"] == []


def test_a_lock_policy_is_checked_as_json(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    assert refused(lambda: boto.initiate_vault_lock(vaultName=vault, policy={"Policy": "[]"})) == (
        400,
        "InvalidParameterValueException",
    )
    assert refused(lambda: boto.get_vault_lock(vaultName=vault)) == (404, "ResourceNotFoundException")


# Data retrieval policy -----------------------------------------------------------------


def test_data_retrieval_policy_get_and_set(boto) -> None:  # type: ignore[no-untyped-def]
    assert boto.get_data_retrieval_policy()["Policy"] == {"Rules": [{"Strategy": "None"}]}
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "BytesPerHour", "BytesPerHour": 10 * MiB}]})
    assert boto.get_data_retrieval_policy()["Policy"] == {
        "Rules": [{"Strategy": "BytesPerHour", "BytesPerHour": 10 * MiB}]
    }
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "FreeTier"}]})
    assert boto.get_data_retrieval_policy()["Policy"] == {"Rules": [{"Strategy": "FreeTier"}]}
    for bad in (
        {"Rules": [{"Strategy": "BytesPerHour"}]},
        {"Rules": [{"Strategy": "FreeTier", "BytesPerHour": 5}]},
        {"Rules": [{"Strategy": "Unlimited"}]},
        {"Rules": [{"Strategy": "None"}, {"Strategy": "FreeTier"}]},
    ):
        with pytest.raises(ClientError) as excinfo:
            boto.set_data_retrieval_policy(Policy=bad)
        assert error_code(excinfo)[1] in ("InvalidParameterValueException", "MissingParameterValueException")
    assert boto.get_data_retrieval_policy()["Policy"] == {"Rules": [{"Strategy": "FreeTier"}]}


def test_bytes_per_hour_counts_a_rolling_hour_of_requests(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, data_of(2 * MiB))
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "BytesPerHour", "BytesPerHour": 3 * MiB}]})
    retrieve(boto, vault, archive_id)
    assert refused(lambda: retrieve(boto, vault, archive_id)) == (400, "PolicyEnforcedException")
    retrieve(boto, vault, archive_id, RetrievalByteRange=f"0-{MiB - 1}")  # what is left of the hour fits
    retrieve(boto, vault, archive_id, tier="Bulk")  # the policy governs Standard retrievals only
    boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    clock(endpoint, 3600 + 1)
    retrieve(boto, vault, archive_id)
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "None"}]})
    retrieve(boto, vault, archive_id)


def test_free_tier_refuses_what_lies_beyond_it(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    control.configure(endpoint, free_tier_bytes_per_day=3 * MiB)
    archive_id = upload(boto, vault, data_of(2 * MiB))
    boto.set_data_retrieval_policy(Policy={"Rules": [{"Strategy": "FreeTier"}]})
    retrieve(boto, vault, archive_id)
    clock(endpoint, 12 * 3600)  # the free tier is a day's share: half a day later it is still spent
    assert refused(lambda: retrieve(boto, vault, archive_id)) == (400, "PolicyEnforcedException")
    clock(endpoint, DAY + 1)
    retrieve(boto, vault, archive_id)


# Provisioned capacity --------------------------------------------------------------------


def test_capacity_units_at_most_two_each_for_a_month(boto, endpoint: str) -> None:  # type: ignore[no-untyped-def]
    assert boto.list_provisioned_capacity()["ProvisionedCapacityList"] == []
    first = boto.purchase_provisioned_capacity()["capacityId"]
    second = boto.purchase_provisioned_capacity()["capacityId"]
    assert refused(boto.purchase_provisioned_capacity) == (400, "LimitExceededException")
    units = boto.list_provisioned_capacity()["ProvisionedCapacityList"]
    assert [u["CapacityId"] for u in units] == [first, second]
    for unit in units:
        start = datetime.fromisoformat(unit["StartDate"].replace("Z", "+00:00"))
        expires = datetime.fromisoformat(unit["ExpirationDate"].replace("Z", "+00:00"))
        assert timedelta(days=28) < expires - start <= timedelta(days=32)
        assert expires.time() == datetime.min.time()  # the service's units end at midnight UTC
    clock(endpoint, 27 * DAY)
    assert len(boto.list_provisioned_capacity()["ProvisionedCapacityList"]) == 2
    clock(endpoint, 33 * DAY)
    assert boto.list_provisioned_capacity()["ProvisionedCapacityList"] == []
    boto.purchase_provisioned_capacity()


def test_without_on_demand_capacity_expedited_needs_a_unit(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"in a hurry")
    retrieve(boto, vault, archive_id, tier="Expedited")  # on-demand capacity by default
    control.configure(endpoint, expedited_capacity="none")
    assert refused(lambda: retrieve(boto, vault, archive_id, tier="Expedited")) == (
        503,
        "InsufficientCapacityException",
    )
    retrieve(boto, vault, archive_id, tier="Standard")
    clock(endpoint, 600)  # the on-demand job above is out of the unit's five minutes
    boto.purchase_provisioned_capacity()
    for _ in range(3):  # a unit guarantees three Expedited retrievals per five minutes
        retrieve(boto, vault, archive_id, tier="Expedited")
    assert refused(lambda: retrieve(boto, vault, archive_id, tier="Expedited")) == (
        503,
        "InsufficientCapacityException",
    )
    clock(endpoint, 600 + 301)
    retrieve(boto, vault, archive_id, tier="Expedited")


def test_expedited_capacity_is_an_in_process_setting(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="hurry")
    archive_id = upload(boto, "hurry", b"x")
    inprocess.settings.expedited_capacity = "none"
    assert refused(lambda: retrieve(boto, "hurry", archive_id, tier="Expedited")) == (
        503,
        "InsufficientCapacityException",
    )
    inprocess.settings.expedited_capacity = "on-demand"
    retrieve(boto, "hurry", archive_id, tier="Expedited")


def test_cli_option_takes_expedited_capacity_away() -> None:
    server = ServedEmulator("--expedited-capacity", "none")
    try:
        boto = boto_client(server.url)
        boto.create_vault(vaultName="hurry")
        archive_id = upload(boto, "hurry", b"x")
        assert refused(lambda: retrieve(boto, "hurry", archive_id, tier="Expedited")) == (
            503,
            "InsufficientCapacityException",
        )
        boto.purchase_provisioned_capacity()
        retrieve(boto, "hurry", archive_id, tier="Expedited")
    finally:
        server.stop()


# Vault figures -----------------------------------------------------------------------------


def test_vault_figures_are_those_of_the_last_inventory(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    def figures() -> tuple[Any, Any, Any]:
        described = raw_body(boto, "DescribeVault", lambda: boto.describe_vault(vaultName=vault))
        listed, marker = [], None
        while True:  # every page, raw: ListVaults sends the same figures, nulls included
            page = raw_body(boto, "ListVaults", lambda: boto.list_vaults(**({"marker": marker} if marker else {})))
            listed += [v for v in page["VaultList"] if v["VaultName"] == vault]
            if not (marker := page["Marker"]):
                break
        assert listed == [described]
        return described["NumberOfArchives"], described["SizeInBytes"], described["LastInventoryDate"]

    upload(boto, vault, b"12345")
    assert figures() == (None, None, None)  # no inventory yet: null, as the service sends
    upload(boto, vault, b"678")
    boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    count, size, taken = figures()
    assert (count, size) == (2, 8) and taken
    gone = upload(boto, vault, b"9")
    assert figures() == (2, 8, taken)  # unchanged until the next inventory
    boto.delete_archive(vaultName=vault, archiveId=gone)
    upload(boto, vault, b"0000")
    boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    assert figures()[:2] == (3, 12)


# Where the emulator used to differ from the service ----------------------------------------


def test_job_output_range_past_the_end_is_served_clipped(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(9437961)  # boto 2 asks for (i+1)*chunk-1 on the last chunk of this one
    archive_id = upload(boto, vault, data)
    job_id = retrieve(boto, vault, archive_id)
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range="bytes=8388608-12582911")
    body = out["body"].read()
    assert out["status"] == 206 and out["contentRange"] == f"bytes 8388608-{len(data) - 1}/{len(data)}"
    assert body == data[8388608:] and out["checksum"] == tree_hash(body)
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range=f"bytes={4 * MiB}-")
    assert out["body"].read() == data[4 * MiB :] and out["contentRange"].startswith(f"bytes {4 * MiB}-")
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range="bytes=-10")
    assert out["body"].read() == data[-10:]
    assert refused(lambda: boto.get_job_output(vaultName=vault, jobId=job_id, range=f"bytes={len(data)}-")) == (
        400,
        "InvalidParameterValueException",
    )


def test_job_descriptions_send_every_key_null_where_it_does_not_apply(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"described")
    control.configure(endpoint, job_delay=3600.0)
    running = retrieve(boto, vault, archive_id)
    control.configure(endpoint, job_delay=0.0)
    archive_job = retrieve(boto, vault, archive_id)
    inventory_job = boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})["jobId"]

    def described(job_id: str) -> dict[str, Any]:
        return raw_body(boto, "DescribeJob", lambda: boto.describe_job(vaultName=vault, jobId=job_id))

    assert described(running)["CompletionDate"] is None and described(running)["Completed"] is False
    job = described(archive_job)
    assert job["InventorySizeInBytes"] is None and job["InventoryRetrievalParameters"] is None
    assert job["CompletionDate"] and job["ArchiveSizeInBytes"] == len(b"described")
    job = described(inventory_job)
    assert {key: job[key] for key in ("ArchiveId", "ArchiveSizeInBytes", "SHA256TreeHash")} == dict.fromkeys(
        ("ArchiveId", "ArchiveSizeInBytes", "SHA256TreeHash")
    )
    assert job["InventorySizeInBytes"] > 0 and job["RetrievalByteRange"] is None
    listed = raw_body(boto, "ListJobs", lambda: boto.list_jobs(vaultName=vault))["JobList"]
    assert {j["JobId"]: j for j in listed} == {j: described(j) for j in (running, archive_job, inventory_job)}


def test_page_limits_above_the_maximum_are_capped(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    for i in range(12):
        boto.create_vault(vaultName=f"{vault}-{i:02d}")
    page = boto.list_vaults(limit="50")
    assert len(page["VaultList"]) == 10 and page["Marker"]
    archive_id = upload(boto, vault, b"x")
    retrieve(boto, vault, archive_id)
    assert len(boto.list_jobs(vaultName=vault, limit="1000")["JobList"]) == 1
    upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    assert len(boto.list_multipart_uploads(vaultName=vault, limit="5000")["UploadsList"]) == 1
    assert boto.list_parts(vaultName=vault, uploadId=upload_id, limit="5000")["Parts"] == []
    for nonsense in ("0", "-1", "ten"):
        assert refused(lambda nonsense=nonsense: boto.list_vaults(limit=nonsense)) == (  # type: ignore[misc]
            400,
            "InvalidParameterValueException",
        )


def test_delete_archive_twice_is_not_an_error(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"twice")
    boto.delete_archive(vaultName=vault, archiveId=archive_id)
    boto.delete_archive(vaultName=vault, archiveId=archive_id)
    assert json.loads(inventory(boto, vault))["ArchiveList"] == []
    assert refused(lambda: retrieve(boto, vault, archive_id)) == (404, "ResourceNotFoundException")


def test_a_finished_jobs_output_outlives_its_archive(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(3 * MiB + 7)
    archive_id = upload(boto, vault, data)
    whole = retrieve(boto, vault, archive_id)
    ranged = retrieve(boto, vault, archive_id, RetrievalByteRange=f"{MiB}-{2 * MiB - 1}")
    boto.describe_job(vaultName=vault, jobId=whole)
    boto.delete_archive(vaultName=vault, archiveId=archive_id)
    out = boto.get_job_output(vaultName=vault, jobId=whole)
    assert out["body"].read() == data and out["checksum"] == tree_hash(data)
    assert boto.describe_job(vaultName=vault, jobId=ranged)["SHA256TreeHash"] == tree_hash(data[MiB : 2 * MiB])
    assert boto.get_job_output(vaultName=vault, jobId=ranged)["body"].read() == data[MiB : 2 * MiB]
    clock(endpoint, DAY + 60)  # a day after completing, the job and its output are gone
    assert refused(lambda: boto.get_job_output(vaultName=vault, jobId=whole)) == (404, "ResourceNotFoundException")


def test_csv_inventory_escapes_quotes_with_a_backslash(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    upload(boto, vault, b"a", "plain")
    upload(boto, vault, b"b", 'say "1,2"')
    upload(boto, vault, b"c", "back\\slash")
    lines = inventory(boto, vault, "CSV").decode().splitlines()
    assert lines[0] == "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash"
    descriptions = [line.split(",", 1)[1].rsplit(",", 3)[0] for line in lines[1:]]
    assert descriptions == ["plain", '"say \\"1,2\\""', '"back\\\\slash"']


def test_inventory_retrieval_parameters_select_a_range(boto, endpoint: str, vault: str) -> None:  # type: ignore[no-untyped-def]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    ids = []
    for day in range(5):  # one archive a day, each made at noon of its day
        clock(endpoint, (start + timedelta(days=day, hours=12) - datetime.now(UTC)).total_seconds())
        ids.append(upload(boto, vault, bytes([day])))

    def date(day: int) -> str:
        return (start + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ranged(**params: str) -> tuple[list[str], dict[str, Any]]:
        job_id = boto.initiate_job(
            vaultName=vault, jobParameters={"Type": "inventory-retrieval", "InventoryRetrievalParameters": params}
        )["jobId"]
        listed = json.loads(boto.get_job_output(vaultName=vault, jobId=job_id)["body"].read())["ArchiveList"]
        described = raw_body(boto, "DescribeJob", lambda: boto.describe_job(vaultName=vault, jobId=job_id))
        return [a["ArchiveId"] for a in listed], described["InventoryRetrievalParameters"]

    assert ranged(StartDate=date(1), EndDate=date(4))[0] == ids[1:4]
    first, described = ranged(StartDate=date(1), Limit="2")
    assert first == ids[1:3] and described["Marker"] and described["Limit"] == "2"
    assert described["StartDate"] == date(1) and described["EndDate"] is None and described["Format"] == "JSON"
    rest, described = ranged(StartDate=date(1), Limit="2", Marker=described["Marker"])
    assert rest == ids[3:5] and described["Marker"] is None
    for bad in ({"Limit": "0"}, {"StartDate": "yesterday"}, {"Marker": "not-a-marker"}):
        assert refused(
            lambda bad=bad: boto.initiate_job(  # type: ignore[misc]
                vaultName=vault, jobParameters={"Type": "inventory-retrieval", "InventoryRetrievalParameters": bad}
            )
        ) == (400, "InvalidParameterValueException")


# The AWS CLI ------------------------------------------------------------------------------


def aws_cli() -> Path:
    tool = Path(sys.executable).parent / "aws"
    if not tool.exists():
        pytest.skip("awscli is not installed in this virtualenv (pip install '.[test]' installs it)")
    return tool


def test_aws_cli_pages_vaults_and_tags_them(served: ServedEmulator) -> None:
    tool = aws_cli()
    names = [f"cli-{os.getpid()}-{i:02d}" for i in range(12)]
    boto = boto_client(served.url)
    for name in names:
        boto.create_vault(vaultName=name)

    def aws(*args: str) -> Any:
        done = subprocess.run(
            [str(tool), "glacier", *args, "--account-id", "-", "--endpoint-url", served.url, "--region", "us-east-1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    try:
        listed = aws("list-vaults", "--page-size", "50")
        assert [v["VaultName"] for v in listed["VaultList"] if v["VaultName"] in names] == names
        aws("add-tags-to-vault", "--vault-name", names[0], "--tags", "owner=ops,tier=cold")
        assert aws("list-tags-for-vault", "--vault-name", names[0])["Tags"] == {"owner": "ops", "tier": "cold"}
    finally:
        control.reset(served.url)
