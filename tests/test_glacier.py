"""GlacierClient: typed results, hidden pagination, retries, and only the project's errors."""

from __future__ import annotations

import json

import botocore.auth
import botocore.utils
import pytest

from glacierfs import errors
from glacierfs.emulator import Emulator
from glacierfs.glacier import GlacierClient
from glacierfs.treehash import combine, tree_hash

from .conftest import MiB, archives, boto_client
from .test_emulator import data_of


@pytest.fixture
def client(inprocess: Emulator) -> GlacierClient:
    return GlacierClient(endpoint_url=inprocess.url, max_attempts=3)


def test_vault_listing_is_paginated_for_the_caller(client: GlacierClient) -> None:
    names = [f"v{i:02d}" for i in range(23)]  # more than two service pages of 10
    for name in names:
        client.create_vault(name)
    assert [v.name for v in client.list_vaults()] == names


def test_upload_hashes_once_and_botocore_not_at_all(client: GlacierClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("botocore hashed a body glacierfs had already hashed")

    monkeypatch.setattr(botocore.utils, "calculate_tree_hash", forbidden)
    monkeypatch.setattr(botocore.utils, "calculate_sha256", forbidden)
    original_payload = botocore.auth.SigV4Auth.payload

    def payload(self: botocore.auth.SigV4Auth, request: object) -> str:
        if getattr(request, "body", None):
            raise AssertionError("botocore hashed a body to sign it")
        return original_payload(self, request)

    monkeypatch.setattr(botocore.auth.SigV4Auth, "payload", payload)
    client.create_vault("hashing")
    data = data_of(5 * MiB + 1)
    single = client.upload_archive("hashing", data, "one request")
    assert single.tree_hash == tree_hash(data)
    upload_id = client.initiate_multipart("hashing", 2 * MiB, "in parts")
    hashes = [
        client.upload_part("hashing", upload_id, offset, data[offset : offset + 2 * MiB])
        for offset in range(0, len(data), 2 * MiB)
    ]
    done = client.complete_multipart("hashing", upload_id, len(data), combine([bytes.fromhex(h) for h in hashes]).hex())
    assert done.tree_hash == tree_hash(data)


def test_multipart_parts_and_abort(client: GlacierClient, inprocess: Emulator) -> None:
    client.create_vault("mp")
    upload_id = client.initiate_multipart("mp", MiB, "desc")
    data = data_of(3 * MiB)
    for offset in range(0, len(data), MiB):
        client.upload_part("mp", upload_id, offset, data[offset : offset + MiB])
    boto = boto_client(inprocess.url)
    listed = boto.list_parts(vaultName="mp", uploadId=upload_id)
    assert (listed["PartSizeInBytes"], listed["ArchiveDescription"]) == (MiB, "desc")
    assert [(p["RangeInBytes"], p["SHA256TreeHash"]) for p in listed["Parts"]] == [
        (f"{i * MiB}-{(i + 1) * MiB - 1}", tree_hash(data[i * MiB : (i + 1) * MiB])) for i in range(3)
    ]
    client.abort_multipart("mp", upload_id)
    assert boto.list_multipart_uploads(vaultName="mp")["UploadsList"] == []


def test_jobs_and_ranged_output(client: GlacierClient, inprocess: Emulator) -> None:
    client.create_vault("jobs")
    data = data_of(4 * MiB + 9)
    archive = client.upload_archive("jobs", data, "x")
    inprocess.settings.job_delay = 60
    pending = client.initiate_archive_retrieval("jobs", archive.archive_id, tier="Bulk")
    with pytest.raises(errors.JobNotReady):
        client.get_job_output("jobs", pending)
    assert [j.job_id for j in client.list_jobs("jobs", completed=False)] == [pending]
    inprocess.settings.job_delay = 0
    job_id = client.initiate_archive_retrieval("jobs", archive.archive_id, byte_range=(0, 4 * MiB - 1))
    job = client.describe_job("jobs", job_id)
    assert job.completed and job.status == "Succeeded" and job.byte_range == (0, 4 * MiB - 1)
    assert job.archive_tree_hash == tree_hash(data) and job.tree_hash == tree_hash(data[: 4 * MiB])
    output = client.get_job_output("jobs", job_id, byte_range=(MiB, 2 * MiB - 1))
    assert output.body == data[MiB : 2 * MiB] and output.tree_hash == tree_hash(output.body)
    assert [j.job_id for j in client.list_jobs("jobs", status="Succeeded")] == [job_id]


def test_inventory(client: GlacierClient) -> None:
    client.create_vault("inv")
    archive = client.upload_archive("inv", b"hello", "greeting")
    job_id = client.initiate_inventory_retrieval("inv")
    listed = json.loads(client.get_job_output("inv", job_id).body)["ArchiveList"]
    assert [(a["ArchiveId"], a["ArchiveDescription"], a["Size"]) for a in listed] == [
        (archive.archive_id, "greeting", 5)
    ]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: c.describe_vault("missing"), errors.NotFound),
        (lambda c: c.create_vault("bad name"), errors.InvalidRequest),
        (lambda c: c.delete_vault("full"), errors.NotEmpty),
        (lambda c: c.upload_archive("full", b"x", hashes=("0" * 64, tree_hash(b"x"))), errors.ChecksumMismatch),
        (lambda c: c.describe_job("full", "nope"), errors.NotFound),
        (lambda c: c.initiate_multipart("full", 3 * MiB), errors.InvalidRequest),
    ],
)
def test_service_errors_become_project_errors(client: GlacierClient, call, expected) -> None:  # type: ignore[no-untyped-def]
    client.create_vault("full")
    client.upload_archive("full", b"content")
    with pytest.raises(expected):
        call(client)


def test_retries_ride_out_faults(client: GlacierClient, inprocess: Emulator) -> None:
    resilient = GlacierClient(endpoint_url=inprocess.url, max_attempts=10)
    resilient.create_vault("flaky")
    inprocess.settings.fault_rate = 0.25
    for _ in range(6):
        resilient.upload_archive("flaky", b"survives")
    inprocess.settings.fault_rate = 0.0
    assert len(archives(inprocess.url, "flaky")) == 6


def test_persistent_faults_surface_as_service_unavailable(client: GlacierClient, inprocess: Emulator) -> None:
    inprocess.settings.fault_rate = 1.0
    with pytest.raises(errors.ServiceUnavailable):
        list(client.list_vaults())


def test_unreachable_endpoint_fails_fast_and_clearly() -> None:
    client = GlacierClient(endpoint_url="http://127.0.0.1:9", max_attempts=2, connect_timeout=1)
    with pytest.raises(errors.ServiceUnavailable, match="unreachable"):
        list(client.list_vaults())


def test_unknown_profile_is_access_denied() -> None:
    with pytest.raises(errors.AccessDenied):
        GlacierClient(endpoint_url="http://127.0.0.1:9", profile="no-such-profile")
