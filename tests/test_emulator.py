"""The emulator, driven by plain boto3, against the Glacier API reference.

Tests taking the ``boto``/``endpoint`` fixtures run twice: against the
in-process emulator and against ``glacierfs emulator`` in a subprocess.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from glacierfs.emulator import Emulator
from glacierfs.testing import ServedEmulator
from glacierfs.treehash import combine, tree_hash

from .conftest import MiB, boto_client


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(boto, vault: str, data: bytes, description: str = "") -> str:  # type: ignore[no-untyped-def]
    return boto.upload_archive(vaultName=vault, body=data, archiveDescription=description)["archiveId"]


def multipart(boto, vault: str, data: bytes, part_size: int, description: str = "") -> str:  # type: ignore[no-untyped-def]
    upload_id = boto.initiate_multipart_upload(
        vaultName=vault, partSize=str(part_size), archiveDescription=description
    )["uploadId"]
    for offset in range(0, len(data), part_size):
        chunk = data[offset : offset + part_size]
        boto.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            body=chunk,
            range=f"bytes {offset}-{offset + len(chunk) - 1}/*",
        )
    return upload_id


def inventory(boto, vault: str, output_format: str = "JSON") -> bytes:  # type: ignore[no-untyped-def]
    job = boto.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval", "Format": output_format})
    return boto.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read()


def archive_count(boto, vault: str) -> int:  # type: ignore[no-untyped-def]
    """How many archives an inventory taken now lists (DescribeVault's count is that of the last inventory)."""
    return len(json.loads(inventory(boto, vault))["ArchiveList"])


# Vaults -------------------------------------------------------------------


# An empty name or one with '/' never forms a vault URL: glacierfs checks names before sending.
@pytest.mark.parametrize("name", ["a" * 256, "has space", "\u00fcmlaut", "star*", "pct%41"])
def test_invalid_vault_names_are_refused(boto, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.create_vault(vaultName=name)
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert boto.list_vaults()["VaultList"] == [] or all(v["VaultName"] != name for v in boto.list_vaults()["VaultList"])


def test_valid_vault_name_rules(boto) -> None:  # type: ignore[no-untyped-def]
    boto.create_vault(vaultName="A-z_0.9")
    boto.create_vault(vaultName="b" * 255)
    names = [v["VaultName"] for v in boto.list_vaults()["VaultList"]]
    assert "A-z_0.9" in names and "b" * 255 in names
    boto.delete_vault(vaultName="A-z_0.9")
    boto.delete_vault(vaultName="b" * 255)


def test_create_vault_again_keeps_archives(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    upload(boto, vault, b"keep me")
    boto.create_vault(vaultName=vault)
    assert archive_count(boto, vault) == 1


def test_delete_non_empty_vault_fails_then_empty_succeeds(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"x")
    with pytest.raises(ClientError) as excinfo:
        boto.delete_vault(vaultName=vault)
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    boto.delete_archive(vaultName=vault, archiveId=archive_id)
    boto.delete_vault(vaultName=vault)
    with pytest.raises(ClientError) as excinfo:
        boto.describe_vault(vaultName=vault)
    assert error_code(excinfo) == (404, "ResourceNotFoundException")


def test_unknown_resources_are_404_never_500(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    calls = [
        lambda: boto.describe_vault(vaultName="no-such-vault"),
        lambda: boto.delete_vault(vaultName="no-such-vault"),
        lambda: boto.upload_archive(vaultName="no-such-vault", body=b"x"),
        lambda: boto.delete_archive(vaultName=vault, archiveId="no-such-archive"),
        lambda: boto.describe_job(vaultName=vault, jobId="no-such-job"),
        lambda: boto.get_job_output(vaultName=vault, jobId="no-such-job"),
        lambda: boto.list_parts(vaultName=vault, uploadId="no-such-upload"),
        lambda: boto.abort_multipart_upload(vaultName=vault, uploadId="no-such-upload"),
        lambda: boto.initiate_job(vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": "nope"}),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == (404, "ResourceNotFoundException")


def test_list_vaults_paginates(boto) -> None:  # type: ignore[no-untyped-def]
    names = [f"page-{i:02d}" for i in range(13)]
    for name in names:
        boto.create_vault(vaultName=name)
    first = boto.list_vaults(limit="5")
    assert len(first["VaultList"]) == 5 and first["Marker"]
    seen = [v["VaultName"] for page in boto.get_paginator("list_vaults").paginate(limit="4") for v in page["VaultList"]]
    assert [n for n in seen if n.startswith("page-")] == names
    for name in names:
        boto.delete_vault(vaultName=name)


# Single upload --------------------------------------------------------------


def test_upload_reports_real_tree_hash_and_unique_ids(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(3 * MiB + 11)
    first = boto.upload_archive(vaultName=vault, body=data)
    second = boto.upload_archive(vaultName=vault, body=data)
    assert first["checksum"] == second["checksum"] == tree_hash(data)
    assert first["archiveId"] != second["archiveId"]
    for archive_id in (first["archiveId"], second["archiveId"]):
        assert len(archive_id) == 138 and re.fullmatch(r"[A-Za-z0-9_-]+", archive_id)
    assert archive_count(boto, vault) == 2


def test_upload_with_wrong_tree_hash_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.upload_archive(vaultName=vault, body=b"abc", checksum=tree_hash(b"abd"))
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert archive_count(boto, vault) == 0


def test_upload_with_wrong_linear_hash_is_refused(endpoint: str, vault: str) -> None:
    client = boto_client(endpoint)
    client.meta.events.register_first(
        "before-call.glacier.UploadArchive",
        lambda params, **_: params["headers"].__setitem__("x-amz-content-sha256", "0" * 64),
    )
    with pytest.raises(ClientError) as excinfo:
        client.upload_archive(vaultName=vault, body=b"abc")
    assert error_code(excinfo)[1] in ("InvalidParameterValueException", "InvalidSignatureException")


def test_empty_archive_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.upload_archive(vaultName=vault, body=b"")
    assert error_code(excinfo)[0] == 400


@pytest.mark.parametrize("description", ["x" * 1025, "tab\there", "caf\u00e9"])
def test_bad_descriptions_are_refused(boto, vault: str, description: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.upload_archive(vaultName=vault, body=b"x", archiveDescription=description)
    assert error_code(excinfo)[0] == 400


# Multipart upload -----------------------------------------------------------


def test_multipart_upload_round_trip(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(5 * MiB + 3)
    upload_id = multipart(boto, vault, data, 2 * MiB, "three parts")
    parts = boto.list_parts(vaultName=vault, uploadId=upload_id)
    assert parts["PartSizeInBytes"] == 2 * MiB and parts["ArchiveDescription"] == "three parts"
    assert [p["RangeInBytes"] for p in parts["Parts"]] == [
        f"0-{2 * MiB - 1}",
        f"{2 * MiB}-{4 * MiB - 1}",
        f"{4 * MiB}-{5 * MiB + 2}",
    ]
    assert [p["SHA256TreeHash"] for p in parts["Parts"]] == [
        tree_hash(data[i : i + 2 * MiB]) for i in range(0, len(data), 2 * MiB)
    ]
    done = boto.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
    )
    assert done["checksum"] == tree_hash(data)
    assert boto.list_multipart_uploads(vaultName=vault)["UploadsList"] == []
    listed = json.loads(inventory(boto, vault))["ArchiveList"]
    assert [(a["ArchiveId"], a["Size"], a["SHA256TreeHash"], a["ArchiveDescription"]) for a in listed] == [
        (done["archiveId"], len(data), tree_hash(data), "three parts")
    ]


@pytest.mark.parametrize("part_size", [0, 512 * 1024, 3 * MiB, 8 * 1024**3, "abc"])
def test_invalid_part_sizes_are_refused(boto, vault: str, part_size: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.initiate_multipart_upload(vaultName=vault, partSize=str(part_size))
    assert error_code(excinfo) == (400, "InvalidParameterValueException")


def test_part_size_limits_accepted(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    for size in (MiB, 4 * 1024**3):
        upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(size))["uploadId"]
        boto.abort_multipart_upload(vaultName=vault, uploadId=upload_id)


@pytest.mark.parametrize(
    "content_range",
    ["bytes 1-1048576/*", "bytes 0-1048575/*", "bytes 1048576-3145727/*", "bytes 512-1535/*"],
)
def test_misaligned_or_oversized_part_ranges_are_refused(boto, vault: str, content_range: str) -> None:  # type: ignore[no-untyped-def]
    upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    first, last = (int(x) for x in re.findall(r"\d+", content_range)[:2])
    body = data_of(last - first + 1)
    if content_range == "bytes 0-1048575/*":
        body = body[:-1]  # the range and the body disagree
    with pytest.raises(ClientError) as excinfo:
        boto.upload_multipart_part(vaultName=vault, uploadId=upload_id, range=content_range, body=body)
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert boto.list_parts(vaultName=vault, uploadId=upload_id)["Parts"] == []


def test_part_with_wrong_hash_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    body = data_of(MiB)
    with pytest.raises(ClientError) as excinfo:
        boto.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            range=f"bytes 0-{MiB - 1}/*",
            body=body,
            checksum=tree_hash(body[:-1] + b"!"),
        )
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert boto.list_parts(vaultName=vault, uploadId=upload_id)["Parts"] == []


def test_reupload_of_a_part_overwrites_it(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(2 * MiB)
    upload_id = multipart(boto, vault, data_of(2 * MiB, seed=9), MiB)
    boto.upload_multipart_part(vaultName=vault, uploadId=upload_id, range=f"bytes 0-{MiB - 1}/*", body=data[:MiB])
    boto.upload_multipart_part(
        vaultName=vault, uploadId=upload_id, range=f"bytes {MiB}-{2 * MiB - 1}/*", body=data[MiB:]
    )
    parts = boto.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]
    assert [p["SHA256TreeHash"] for p in parts] == [tree_hash(data[:MiB]), tree_hash(data[MiB:])]
    done = boto.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
    )
    job = boto.initiate_job(
        vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": done["archiveId"]}
    )
    assert boto.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read() == data


def test_complete_with_a_missing_part_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(3 * MiB)
    upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    for index in (0, 2):  # no part 1
        boto.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            body=data[index * MiB : (index + 1) * MiB],
            range=f"bytes {index * MiB}-{(index + 1) * MiB - 1}/*",
        )
    with pytest.raises(ClientError) as excinfo:
        boto.complete_multipart_upload(
            vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
        )
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert archive_count(boto, vault) == 0


def test_complete_with_short_middle_part_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    upload_id = boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"]
    boto.upload_multipart_part(vaultName=vault, uploadId=upload_id, body=b"a" * 10, range="bytes 0-9/*")
    boto.upload_multipart_part(
        vaultName=vault, uploadId=upload_id, body=b"b" * MiB, range=f"bytes {MiB}-{2 * MiB - 1}/*"
    )
    with pytest.raises(ClientError) as excinfo:
        boto.complete_multipart_upload(
            vaultName=vault, uploadId=upload_id, archiveSize=str(MiB + 10), checksum=tree_hash(b"a" * 10 + b"b" * MiB)
        )
    assert error_code(excinfo) == (400, "InvalidParameterValueException")


def test_complete_with_wrong_tree_hash_or_size_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(2 * MiB + 1)
    upload_id = multipart(boto, vault, data, MiB)
    for size, checksum in [
        (len(data), tree_hash(data[:-1])),
        (len(data) + 1, tree_hash(data)),
        (len(data) - 1, tree_hash(data)),
    ]:
        with pytest.raises(ClientError) as excinfo:
            boto.complete_multipart_upload(
                vaultName=vault, uploadId=upload_id, archiveSize=str(size), checksum=checksum
            )
        assert error_code(excinfo) == (400, "InvalidParameterValueException")
    # Still open, and completes once the hash is right.
    done = boto.complete_multipart_upload(
        vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
    )
    assert done["checksum"] == tree_hash(data)


def test_combined_part_hashes_are_the_archive_hash(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(7 * MiB + 5)
    upload_id = multipart(boto, vault, data, 4 * MiB)
    parts = boto.list_parts(vaultName=vault, uploadId=upload_id)["Parts"]
    assert combine([bytes.fromhex(p["SHA256TreeHash"]) for p in parts]).hex() == tree_hash(data)


def test_abort_and_list_uploads_paginate(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    ids = {boto.initiate_multipart_upload(vaultName=vault, partSize=str(MiB))["uploadId"] for _ in range(5)}
    first = boto.list_multipart_uploads(vaultName=vault, limit="2")
    assert len(first["UploadsList"]) == 2 and first["Marker"]
    listed = {
        u["MultipartUploadId"]
        for page in boto.get_paginator("list_multipart_uploads").paginate(vaultName=vault, limit="2")
        for u in page["UploadsList"]
    }
    assert listed == ids
    for upload_id in ids:
        boto.abort_multipart_upload(vaultName=vault, uploadId=upload_id)
    assert boto.list_multipart_uploads(vaultName=vault)["UploadsList"] == []
    with pytest.raises(ClientError) as excinfo:
        boto.upload_multipart_part(vaultName=vault, uploadId=ids.pop(), range="bytes 0-0/*", body=b"x")
    assert error_code(excinfo) == (404, "ResourceNotFoundException")


def test_list_parts_paginates(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(5 * MiB)
    upload_id = multipart(boto, vault, data, MiB)
    first = boto.list_parts(vaultName=vault, uploadId=upload_id, limit="2")
    assert len(first["Parts"]) == 2 and first["Marker"]
    ranges = [
        p["RangeInBytes"]
        for page in boto.get_paginator("list_parts").paginate(vaultName=vault, uploadId=upload_id, limit="2")
        for p in page["Parts"]
    ]
    assert ranges == [f"{i * MiB}-{(i + 1) * MiB - 1}" for i in range(5)]


# Jobs ----------------------------------------------------------------------


def test_retrieval_returns_archive_and_hash(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(3 * MiB + 100)
    archive_id = upload(boto, vault, data, "whole")
    job_id = boto.initiate_job(
        vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"}
    )["jobId"]
    job = boto.describe_job(vaultName=vault, jobId=job_id)
    assert (job["StatusCode"], job["Completed"], job["Tier"]) == ("Succeeded", True, "Expedited")
    assert job["ArchiveSizeInBytes"] == len(data)
    assert job["ArchiveSHA256TreeHash"] == job["SHA256TreeHash"] == tree_hash(data)
    assert job["RetrievalByteRange"] == f"0-{len(data) - 1}"
    output = boto.get_job_output(vaultName=vault, jobId=job_id)
    assert output["status"] == 200 and output["checksum"] == tree_hash(data)
    assert output["archiveDescription"] == "whole"
    assert output["body"].read() == data


def test_ranged_retrieval_and_ranged_output(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(6 * MiB + 7)
    archive_id = upload(boto, vault, data)
    job_id = boto.initiate_job(
        vaultName=vault,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "RetrievalByteRange": f"{4 * MiB}-{len(data) - 1}",
        },
    )["jobId"]
    job = boto.describe_job(vaultName=vault, jobId=job_id)
    wanted = data[4 * MiB :]
    assert job["RetrievalByteRange"] == f"{4 * MiB}-{len(data) - 1}"
    assert job["SHA256TreeHash"] == tree_hash(wanted)
    # An aligned range of the output carries its tree hash...
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range=f"bytes={2 * MiB}-{len(wanted) - 1}")
    body = out["body"].read()
    assert out["status"] == 206 and out["contentRange"] == f"bytes {2 * MiB}-{len(wanted) - 1}/{len(wanted)}"
    assert body == wanted[2 * MiB :] and out["checksum"] == tree_hash(body)
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range=f"bytes=0-{2 * MiB - 1}")
    assert out["checksum"] == tree_hash(out["body"].read()) == tree_hash(wanted[: 2 * MiB])
    # [1 MiB, end) is MiB aligned but no node of the tree over 2 MiB + 7 bytes.
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range=f"bytes={MiB}-{len(wanted) - 1}")
    assert out["body"].read() == wanted[MiB:] and "checksum" not in out
    # ...an unaligned one does not.
    out = boto.get_job_output(vaultName=vault, jobId=job_id, range="bytes=10-99")
    assert out["body"].read() == wanted[10:100] and "checksum" not in out


def test_unaligned_retrieval_range_has_no_tree_hash(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    data = data_of(4 * MiB)
    archive_id = upload(boto, vault, data)
    job_id = boto.initiate_job(
        vaultName=vault,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "RetrievalByteRange": f"{MiB}-{3 * MiB - 1}",
        },
    )["jobId"]
    assert "SHA256TreeHash" not in boto.describe_job(vaultName=vault, jobId=job_id)
    assert boto.get_job_output(vaultName=vault, jobId=job_id)["body"].read() == data[MiB : 3 * MiB]


@pytest.mark.parametrize("byte_range", ["1-1048575", "0-1048574", "0-99999999", "2097152-1048575", "abc"])
def test_misaligned_retrieval_ranges_are_refused(boto, vault: str, byte_range: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, data_of(3 * MiB))
    with pytest.raises(ClientError) as excinfo:
        boto.initiate_job(
            vaultName=vault,
            jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "RetrievalByteRange": byte_range},
        )
    assert error_code(excinfo) == (400, "InvalidParameterValueException")


@pytest.mark.parametrize(
    "params",
    [{"Type": "nonsense"}, {"Type": "archive-retrieval"}, {"Type": "inventory-retrieval", "Format": "XML"}, {}],
)
def test_invalid_job_parameters_are_refused(boto, vault: str, params: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as excinfo:
        boto.initiate_job(vaultName=vault, jobParameters=params)
    assert error_code(excinfo)[1] in ("InvalidParameterValueException", "MissingParameterValueException")


def test_invalid_tier_is_refused(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"x")
    with pytest.raises(ClientError) as excinfo:
        boto.initiate_job(
            vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Instant"}
        )
    assert error_code(excinfo) == (400, "InvalidParameterValueException")


def test_inventory_json_and_csv(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    tricky = 'a "quoted", comma-separated description'
    ids = {upload(boto, vault, data_of(100 + i, seed=i), f"file {i}" if i else tricky): 100 + i for i in range(3)}
    listed = json.loads(inventory(boto, vault, "JSON"))
    assert listed["VaultARN"].endswith(f":vaults/{vault}") and listed["InventoryDate"]
    assert {a["ArchiveId"]: a["Size"] for a in listed["ArchiveList"]} == ids
    # The reference's CSV escapes a double quote inside a quoted field with a backslash.
    text = inventory(boto, vault, "CSV").decode()
    assert '"a \\"quoted\\", comma-separated description"' in text
    rows = list(csv.DictReader(io.StringIO(text), escapechar="\\", doublequote=False))
    assert {r["ArchiveId"]: int(r["Size"]) for r in rows} == ids
    assert tricky in {r["ArchiveDescription"] for r in rows}
    assert {r["SHA256TreeHash"] for r in rows} == {a["SHA256TreeHash"] for a in listed["ArchiveList"]}


def test_inventory_leaves_out_deleted_archives(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    keep = upload(boto, vault, b"keep")
    gone = upload(boto, vault, b"gone")
    boto.delete_archive(vaultName=vault, archiveId=gone)
    assert [a["ArchiveId"] for a in json.loads(inventory(boto, vault))["ArchiveList"]] == [keep]


def test_list_jobs_filters_and_paginates(boto, vault: str) -> None:  # type: ignore[no-untyped-def]
    archive_id = upload(boto, vault, b"x")
    ids = [
        boto.initiate_job(vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id})[
            "jobId"
        ]
        for _ in range(3)
    ]
    first = boto.list_jobs(vaultName=vault, limit="2")
    assert len(first["JobList"]) == 2 and first["Marker"]
    paged = [
        j["JobId"]
        for page in boto.get_paginator("list_jobs").paginate(vaultName=vault, limit="2")
        for j in page["JobList"]
    ]
    assert paged == ids
    assert len(boto.list_jobs(vaultName=vault, statuscode="Succeeded")["JobList"]) == 3
    assert boto.list_jobs(vaultName=vault, statuscode="InProgress")["JobList"] == []
    assert boto.list_jobs(vaultName=vault, completed="false")["JobList"] == []


def test_job_delay_keeps_jobs_in_progress(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="delayed")
    archive_id = upload(boto, "delayed", b"later")
    inprocess.settings.job_delay = 1.5
    job_id = boto.initiate_job(
        vaultName="delayed", jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )["jobId"]
    job = boto.describe_job(vaultName="delayed", jobId=job_id)
    assert (job["StatusCode"], job["Completed"]) == ("InProgress", False)
    assert [j["JobId"] for j in boto.list_jobs(vaultName="delayed", statuscode="InProgress")["JobList"]] == [job_id]
    with pytest.raises(ClientError) as excinfo:
        boto.get_job_output(vaultName="delayed", jobId=job_id)
    assert error_code(excinfo) == (400, "InvalidParameterValueException")
    assert "not currently available" in excinfo.value.response["Error"]["Message"]
    deadline = time.monotonic() + 10
    while boto.describe_job(vaultName="delayed", jobId=job_id)["StatusCode"] != "Succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert boto.get_job_output(vaultName="delayed", jobId=job_id)["body"].read() == b"later"
    assert boto.list_jobs(vaultName="delayed", completed="true")["JobList"][0]["JobId"] == job_id


# Faults and latency -----------------------------------------------------------


def test_fault_rate_one_refuses_every_request(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    inprocess.settings.fault_rate = 1.0
    seen = set()
    for _ in range(40):
        try:
            boto.list_vaults()
        except ClientError as error:
            seen.add(error.response["Error"]["Code"])
        except Exception as error:  # noqa: BLE001 - a dropped connection, whatever botocore calls it
            seen.add(type(error).__name__)
        else:
            pytest.fail("a request got through at fault rate 1.0")
    assert {"ThrottlingException", "RequestTimeoutException", "ServiceUnavailableException"} <= seen
    assert seen - {"ThrottlingException", "RequestTimeoutException", "ServiceUnavailableException"}, seen


def test_faults_are_survived_by_botocore_retries(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url, attempts=10)
    boto.create_vault(vaultName="faulty")
    inprocess.settings.fault_rate = 0.2
    data = data_of(2 * MiB)
    ids = [upload(boto, "faulty", data) for _ in range(5)]
    upload_id = multipart(boto, "faulty", data, MiB)
    boto.complete_multipart_upload(
        vaultName="faulty", uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
    )
    inprocess.settings.fault_rate = 0.0
    assert archive_count(boto, "faulty") == len(ids) + 1


def test_latency_is_added(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    inprocess.settings.latency_ms = 300
    start = time.monotonic()
    boto.list_vaults()
    assert time.monotonic() - start >= 0.3


def test_corrupted_output_keeps_the_true_hash(inprocess: Emulator) -> None:
    boto = boto_client(inprocess.url)
    boto.create_vault(vaultName="corrupt")
    data = data_of(MiB)
    archive_id = upload(boto, "corrupt", data)
    job_id = boto.initiate_job(
        vaultName="corrupt", jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )["jobId"]
    inprocess.settings.corrupt_outputs = 1
    bad = boto.get_job_output(vaultName="corrupt", jobId=job_id)
    assert bad["checksum"] == tree_hash(data) and tree_hash(bad["body"].read()) != tree_hash(data)
    good = boto.get_job_output(vaultName="corrupt", jobId=job_id)
    assert good["body"].read() == data


def test_cli_flags_set_faults_and_delay(tmp_path: Path) -> None:
    server = ServedEmulator("--fault-rate", "1.0")
    try:
        with pytest.raises((ClientError, BotoCoreError)):  # a dropped connection is a BotoCoreError
            boto_client(server.url).list_vaults()
    finally:
        server.stop()
    server = ServedEmulator("--job-delay", "30")
    try:
        boto = boto_client(server.url)
        boto.create_vault(vaultName="slow")
        job_id = boto.initiate_job(vaultName="slow", jobParameters={"Type": "inventory-retrieval"})["jobId"]
        assert boto.describe_job(vaultName="slow", jobId=job_id)["StatusCode"] == "InProgress"
    finally:
        server.stop()


# Persistence -----------------------------------------------------------------


def test_state_survives_a_restart_of_the_served_emulator(tmp_path: Path) -> None:
    data = data_of(3 * MiB + 1)
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    try:
        boto = boto_client(server.url)
        boto.create_vault(vaultName="durable")
        archive_id = upload(boto, "durable", data, "kept")
        open_upload = multipart(boto, "durable", data[: 2 * MiB], MiB)
        job_id = boto.initiate_job(
            vaultName="durable", jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
        )["jobId"]
    finally:
        server.stop()
    server = ServedEmulator(data_dir=tmp_path / "glacier")
    try:
        boto = boto_client(server.url)
        assert archive_count(boto, "durable") == 1
        assert boto.get_job_output(vaultName="durable", jobId=job_id)["body"].read() == data
        assert [u["MultipartUploadId"] for u in boto.list_multipart_uploads(vaultName="durable")["UploadsList"]] == [
            open_upload
        ]
        assert len(boto.list_parts(vaultName="durable", uploadId=open_upload)["Parts"]) == 2
        boto.complete_multipart_upload(
            vaultName="durable", uploadId=open_upload, archiveSize=str(2 * MiB), checksum=tree_hash(data[: 2 * MiB])
        )
        assert archive_count(boto, "durable") == 2
    finally:
        server.stop()


def test_in_process_emulator_with_data_dir_survives_restart(tmp_path: Path, emulator: Emulator) -> None:
    # The session emulator shares moto's global state: stop it, use our own, restart it after.
    emulator.stop()
    try:
        with Emulator(data_dir=tmp_path) as first:
            boto = boto_client(first.url)
            boto.create_vault(vaultName="kept")
            upload(boto, "kept", b"persist")
        assert any(tmp_path.iterdir())
        with Emulator(data_dir=tmp_path) as second:
            listed = json.loads(inventory(boto_client(second.url), "kept"))["ArchiveList"]
            assert [a["Size"] for a in listed] == [len(b"persist")]
    finally:
        emulator.start()
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
