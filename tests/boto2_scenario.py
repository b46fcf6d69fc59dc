"""The seed's own client, boto 2.49, against the emulator: run by test_boto2.py
with the Python of a virtualenv of its own (never glacierfs's), it uploads,
retrieves and lists the way boto2 users do, and prints what it did as JSON
for the test to check with boto3.

boto 2.49 predates Python 3's bytes/str split in two places it needs here;
they are fixed in this process only, never in glacierfs:
- ``boto.glacier.utils.bytes_to_hex`` returns bytes, so every tree hash it
  computes compares unequal to the service's (boto #3059);
- ``boto.glacier.writer.generate_parts_from_fobj`` encodes the bytes a binary
  file gives, which resuming an upload (``resume_archive_from_file``) trips on.
An endpoint named by IP address also needs the SigV4 service and region named,
which boto2 otherwise reads from the host name.

Usage: python boto2_scenario.py ENDPOINT_URL VAULT WORKDIR
"""

from __future__ import annotations

import binascii
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto.glacier.concurrent
import boto.glacier.utils
import boto.glacier.writer
from boto.glacier.exceptions import UnexpectedHTTPResponseError
from boto.glacier.layer2 import Layer2
from boto.regioninfo import RegionInfo

MiB = 1 << 20
SIZE = 9437961  # not a multiple of 4 MiB: download_to_file asks past its end on the last chunk
TOPIC = "arn:aws:sns:us-east-1:123456789012:glacier-jobs"
EVENTS = ["ArchiveRetrievalCompleted", "InventoryRetrievalCompleted"]


def hex_text(data: bytes) -> str:
    return binascii.hexlify(data).decode("ascii")


def parts_of(fobj: Any, part_size: int) -> Iterator[bytes]:
    while data := fobj.read(part_size):
        yield data.encode("utf-8") if isinstance(data, str) else data


def fix_boto2() -> None:
    for module in (boto.glacier.utils, boto.glacier.writer, boto.glacier.concurrent):
        module.bytes_to_hex = hex_text  # each imported it by name
    boto.glacier.writer.generate_parts_from_fobj = parts_of


def main(url: str, vault_name: str, workdir: Path) -> dict[str, Any]:
    fix_boto2()
    endpoint = urlsplit(url)
    layer2 = Layer2(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region=RegionInfo(name="us-east-1", endpoint=endpoint.hostname),
        is_secure=False,
        port=endpoint.port,
    )
    layer1 = layer2.layer1
    layer1.auth_service_name = "glacier"
    layer1.auth_region_name = "us-east-1"

    source = workdir / "source.bin"
    source.write_bytes(random.Random(2510).randbytes(SIZE))
    vault = layer2.create_vault(vault_name)

    vault.SingleOperationThreshold = MiB  # upload_archive takes its Writer for anything larger
    via_writer = vault.upload_archive(str(source), description="boto2 writer")
    concurrent = vault.concurrent_create_archive_from_file(str(source), "boto2 concurrent")

    # An upload cut short after its first part, then resumed from the file (ListParts, tree hashes).
    writer = vault.create_archive_writer(part_size=MiB, description="boto2 resumed")
    with source.open("rb") as data:
        writer.write(data.read(2 * MiB))  # sends one part, keeps the second
    resumed = vault.resume_archive_from_file(writer.upload_id, filename=str(source))

    job = vault.retrieve_archive(via_writer, description="boto2 retrieval")
    job = vault.get_job(job.id)
    target = workdir / "downloaded.bin"
    job.download_to_file(str(target), chunk_size=4 * MiB)  # checks each chunk's tree hash
    inventory = vault.retrieve_inventory(description="boto2 inventory")

    layer1.set_vault_notifications(vault_name, {"SNSTopic": TOPIC, "Events": EVENTS})
    notifications = dict(layer1.get_vault_notifications(vault_name))
    layer1.delete_vault_notifications(vault_name)
    try:
        layer1.get_vault_notifications(vault_name)
        after_delete = 200
    except UnexpectedHTTPResponseError as error:
        after_delete = error.status

    return {
        "archives": {"writer": via_writer, "concurrent": concurrent, "resumed": resumed},
        "job": {"id": job.id, "completed": job.completed, "archive_id": job.archive_id, "size": job.archive_size},
        "downloaded_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "inventory_job": inventory,
        "listed_jobs": sorted([listed.id, listed.action] for listed in vault.list_jobs()),
        "notifications": {key: notifications[key] for key in ("SNSTopic", "Events")},
        "notifications_after_delete": after_delete,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))))
