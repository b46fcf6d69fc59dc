"""Glacier's rules on top of moto's Glacier backend.

Stock moto keeps archives in memory, names them md5(body), reports a plain
SHA-256 as the tree hash, has no multipart upload and ignores ranges. This
subclass keeps moto's plumbing (BackendDict, account and region routing) and
replaces the behaviour with what the Glacier API reference says.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import time
from typing import Any

from moto.core.base_backend import BackendDict
from moto.glacier.models import GlacierBackend

from glacierfs.treehash import MiB, combine, file_tree_hash, part_hashes, tree_hash

from .knobs import EmulatorSettings, calls, settings
from .rules import (
    GiB,
    GlacierError,
    check_description,
    check_page,
    invalid,
    iso,
    missing,
    new_id,
    not_found,
    parse_range,
)
from .store import Store, VaultRow, close_store, current_store, open_store

# Names the HTTP layer and Emulator import from here.
__all__ = [
    "EmulatedGlacierBackend",
    "EmulatorSettings",
    "calls",
    "check_page",
    "close_store",
    "emulated_backends",
    "invalid",
    "open_store",
    "reset",
    "settings",
]

log = logging.getLogger(__name__)

MAX_PART_SIZE = 4 * GiB
MAX_SINGLE_UPLOAD = 4 * GiB
MAX_PARTS = 10_000
MAX_VAULTS = 1_000
OUTPUT_LIFETIME = 24 * 3600
VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
TIERS = ("Expedited", "Standard", "Bulk")


def is_tree_aligned(start: int, stop: int, total: int) -> bool:
    """Whether [start, stop) is a node of the tree over ``total`` bytes."""
    if start % MiB or not 0 <= start < stop <= total:
        return False
    span = MiB
    while True:
        if start % span:
            return False
        if stop == min(start + span, total):
            return True
        if start + span >= total:
            return False
        span *= 2


class EmulatedGlacierBackend(GlacierBackend):
    """One account's Glacier in one region, backed by the shared Store."""

    # Vaults ---------------------------------------------------------------

    @property
    def store(self) -> Store:
        return current_store()

    def arn(self, vault_name: str) -> str:
        return f"arn:aws:glacier:{self.region_name}:{self.account_id}:vaults/{vault_name}"

    def vault(self, name: str) -> VaultRow:
        row = self.store.query_one(
            "SELECT id, name, created FROM vaults WHERE account=? AND region=? AND name=?",
            (self.account_id, self.region_name, name),
        )
        if row is None:
            raise not_found(f"Vault not found for ARN: {self.arn(name)}")
        return VaultRow(row["id"], row["name"], row["created"])

    def create_vault(self, vault_name: str) -> None:  # type: ignore[override]
        if not VAULT_NAME.fullmatch(vault_name):
            raise invalid(
                "Invalid vault name: 1 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"
            )
        with self.store.transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM vaults WHERE account=? AND region=?",
                (self.account_id, self.region_name),
            ).fetchone()
            exists = db.execute(
                "SELECT 1 FROM vaults WHERE account=? AND region=? AND name=?",
                (self.account_id, self.region_name, vault_name),
            ).fetchone()
            if exists:
                return  # CreateVault is idempotent and keeps what the vault holds.
            if count >= MAX_VAULTS:
                raise GlacierError(400, "LimitExceededException", "Too many vaults")
            db.execute(
                "INSERT INTO vaults (account, region, name, created) VALUES (?,?,?,?)",
                (self.account_id, self.region_name, vault_name, time.time()),
            )

    def describe_vault_dict(self, vault_name: str) -> dict[str, Any]:
        vault = self.vault(vault_name)
        return self._vault_dict(vault)

    def _vault_dict(self, vault: VaultRow) -> dict[str, Any]:
        count, size = self.store.query_one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM archives "
            "WHERE vault_id=? AND deleted IS NULL",
            (vault.id,),
        )
        return {
            "CreationDate": iso(vault.created),
            "LastInventoryDate": iso(vault.created),
            "NumberOfArchives": count,
            "SizeInBytes": size,
            "VaultARN": self.arn(vault.name),
            "VaultName": vault.name,
        }

    def list_vault_page(self, marker: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        rows = self.store.query(
            "SELECT id, name, created FROM vaults WHERE account=? AND region=? AND name>? "
            "ORDER BY name LIMIT ?",
            (self.account_id, self.region_name, marker or "", limit + 1),
        )
        page = [self._vault_dict(VaultRow(r["id"], r["name"], r["created"])) for r in rows[:limit]]
        return page, (rows[limit - 1]["name"] if len(rows) > limit else None)

    def delete_vault(self, vault_name: str) -> None:  # type: ignore[override]
        vault = self.vault(vault_name)
        with self.store.transaction() as db:
            live = db.execute(
                "SELECT 1 FROM archives WHERE vault_id=? AND deleted IS NULL LIMIT 1", (vault.id,)
            ).fetchone()
            if live:
                raise invalid(f"Vault not empty or recently written to: {self.arn(vault_name)}")
            db.execute("DELETE FROM vaults WHERE id=?", (vault.id,))
            db.execute("DELETE FROM jobs WHERE vault_id=?", (vault.id,))

    # Archives -------------------------------------------------------------

    def _check_body_hashes(self, body: bytes, tree_hash: str | None, linear: str | None) -> str:
        if not tree_hash:
            raise missing("Missing required header: x-amz-sha256-tree-hash")
        actual_linear, actual_tree = part_hashes(body)
        if linear and linear.lower() != actual_linear:
            raise invalid(
                f"Checksum mismatch: x-amz-content-sha256 {linear} but the body hashes to {actual_linear}"
            )
        if tree_hash.lower() != actual_tree:
            raise invalid(
                f"Checksum mismatch: x-amz-sha256-tree-hash {tree_hash} but the body's tree hash is {actual_tree}"
            )
        return actual_tree

    def upload_archive_checked(
        self, vault_name: str, body: bytes, description: str, tree_hash: str | None, linear: str | None
    ) -> tuple[str, str]:
        vault = self.vault(vault_name)
        check_description(description)
        if not body:
            raise invalid("Invalid Content-Length: an archive holds at least 1 byte")
        if len(body) > MAX_SINGLE_UPLOAD:
            raise invalid("Invalid Content-Length: a single upload holds at most 4 GiB")
        actual = self._check_body_hashes(body, tree_hash, linear)
        archive_id = new_id(103)
        self.store.write_at(self.store.archive_path(archive_id), 0, body)
        self.store.execute(
            "INSERT INTO archives (id, vault_id, description, size, tree_hash, created) "
            "VALUES (?,?,?,?,?,?)",
            (archive_id, vault.id, description, len(body), actual, time.time()),
        )
        return archive_id, actual

    def _archive(self, vault: VaultRow, archive_id: str) -> Any:
        row = self.store.query_one(
            "SELECT * FROM archives WHERE id=? AND vault_id=? AND deleted IS NULL",
            (archive_id, vault.id),
        )
        if row is None:
            raise not_found(f"Archive not found: {archive_id}")
        return row

    def _archive_row(self, archive_id: str) -> Any:
        """The archive's row even after deletion: jobs outlive the archives they read."""
        return self.store.query_one("SELECT * FROM archives WHERE id=?", (archive_id,))

    def delete_archive(self, vault_name: str, archive_id: str) -> None:  # type: ignore[override]
        vault = self.vault(vault_name)
        self._archive(vault, archive_id)
        self.store.execute("UPDATE archives SET deleted=? WHERE id=?", (time.time(), archive_id))
        self.store.remove(self.store.archive_path(archive_id))

    # Multipart upload -----------------------------------------------------

    def initiate_multipart(self, vault_name: str, part_size: str | None, description: str) -> str:
        vault = self.vault(vault_name)
        if part_size is None:
            raise missing("Missing required header: x-amz-part-size")
        check_description(description)
        size = int(part_size) if part_size.isdigit() else 0
        if size < MiB or size > MAX_PART_SIZE or size & (size - 1):
            raise invalid(
                f"Invalid part size: {part_size}. The part size must be a megabyte "
                "(1024 KB) multiplied by a power of 2, up to 4096 MB"
            )
        upload_id = new_id(69)
        self.store.execute(
            "INSERT INTO uploads (id, vault_id, description, part_size, created) VALUES (?,?,?,?,?)",
            (upload_id, vault.id, description, size, time.time()),
        )
        return upload_id

    def _upload(self, vault_name: str, upload_id: str) -> Any:
        vault = self.vault(vault_name)
        row = self.store.query_one(
            "SELECT * FROM uploads WHERE id=? AND vault_id=?", (upload_id, vault.id)
        )
        if row is None:
            raise not_found(f"Multipart upload not found: {upload_id}")
        return row

    def upload_part(
        self,
        vault_name: str,
        upload_id: str,
        content_range: str | None,
        body: bytes,
        tree_hash: str | None,
        linear: str | None,
    ) -> str:
        upload = self._upload(vault_name, upload_id)
        if not content_range:
            raise missing("Missing required header: Content-Range")
        first, last = parse_range(content_range, r"bytes (\d+)-(\d+)/\*")
        part_size = upload["part_size"]
        length = last - first + 1
        if last < first or first % part_size or length > part_size:
            raise invalid(
                f"Content-Range: {content_range} is incompatible with part size {part_size}"
            )
        if length != len(body):
            raise invalid(f"Content-Range {content_range} does not match a body of {len(body)} bytes")
        if first // part_size >= MAX_PARTS:
            raise invalid(f"Content-Range {content_range}: more than {MAX_PARTS} parts")
        actual = self._check_body_hashes(body, tree_hash, linear)
        self.store.write_at(self.store.upload_path(upload_id), first, body)
        self.store.execute(
            "INSERT OR REPLACE INTO parts (upload_id, start, size, tree_hash) VALUES (?,?,?,?)",
            (upload_id, first, length, actual),
        )
        return actual

    def complete_multipart(
        self, vault_name: str, upload_id: str, archive_size: str | None, tree_hash: str | None
    ) -> tuple[str, str]:
        upload = self._upload(vault_name, upload_id)
        if archive_size is None or not archive_size.isdigit():
            raise missing("Missing or invalid header: x-amz-archive-size")
        if not tree_hash:
            raise missing("Missing required header: x-amz-sha256-tree-hash")
        size = int(archive_size)
        part_size = upload["part_size"]
        parts = self.store.query(
            "SELECT start, size, tree_hash FROM parts WHERE upload_id=? ORDER BY start", (upload_id,)
        )
        expected_start = 0
        for index, part in enumerate(parts):
            if part["start"] != expected_start:
                raise invalid(f"Missing part at byte {expected_start} of upload {upload_id}")
            is_last = index == len(parts) - 1
            if not is_last and part["size"] != part_size:
                raise invalid(f"Part at byte {part['start']} is shorter than the part size")
            expected_start += part["size"]
        if not parts or expected_start != size:
            raise invalid(
                f"Archive size {size} does not match the {expected_start} bytes uploaded in parts"
            )
        actual = combine([bytes.fromhex(part["tree_hash"]) for part in parts]).hex()
        if tree_hash.lower() != actual:
            raise invalid(
                f"Checksum mismatch: x-amz-sha256-tree-hash {tree_hash} but the parts combine to {actual}"
            )
        archive_id = new_id(103)
        source = self.store.upload_path(upload_id)
        os.truncate(source, size)
        os.replace(source, self.store.archive_path(archive_id))
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO archives (id, vault_id, description, size, tree_hash, created) "
                "VALUES (?,?,?,?,?,?)",
                (archive_id, upload["vault_id"], upload["description"], size, actual, time.time()),
            )
            db.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))
        return archive_id, actual

    def abort_multipart(self, vault_name: str, upload_id: str) -> None:
        self._upload(vault_name, upload_id)
        with self.store.transaction() as db:
            db.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))
        self.store.remove(self.store.upload_path(upload_id))

    def _upload_dict(self, vault_name: str, upload: Any) -> dict[str, Any]:
        return {
            "ArchiveDescription": upload["description"],
            "CreationDate": iso(upload["created"]),
            "MultipartUploadId": upload["id"],
            "PartSizeInBytes": upload["part_size"],
            "VaultARN": self.arn(vault_name),
        }

    def list_parts_page(
        self, vault_name: str, upload_id: str, marker: str | None, limit: int
    ) -> dict[str, Any]:
        upload = self._upload(vault_name, upload_id)
        start = int(marker) if marker and marker.isdigit() else 0
        rows = self.store.query(
            "SELECT start, size, tree_hash FROM parts WHERE upload_id=? AND start>=? "
            "ORDER BY start LIMIT ?",
            (upload_id, start, limit + 1),
        )
        result = self._upload_dict(vault_name, upload)
        result["Parts"] = [
            {"RangeInBytes": f"{r['start']}-{r['start'] + r['size'] - 1}", "SHA256TreeHash": r["tree_hash"]}
            for r in rows[:limit]
        ]
        result["Marker"] = str(rows[limit]["start"]) if len(rows) > limit else None
        return result

    def list_uploads_page(
        self, vault_name: str, marker: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        vault = self.vault(vault_name)
        rows = self.store.query(
            "SELECT * FROM uploads WHERE vault_id=? AND id>? ORDER BY id LIMIT ?",
            (vault.id, marker or "", limit + 1),
        )
        page = [self._upload_dict(vault_name, r) for r in rows[:limit]]
        return page, (rows[limit - 1]["id"] if len(rows) > limit else None)

    # Jobs -----------------------------------------------------------------

    def initiate_job_checked(self, vault_name: str, params: dict[str, Any]) -> str:
        vault = self.vault(vault_name)
        job_type = params.get("Type")
        tier = params.get("Tier") or "Standard"
        if tier not in TIERS:
            raise invalid(f"Invalid tier: {tier!r} (one of {', '.join(TIERS)})")
        description = params.get("Description") or None
        now = time.time()
        row: dict[str, Any] = {
            "id": new_id(69),
            "vault_id": vault.id,
            "tier": tier,
            "description": description,
            "created": now,
            "completes": now + settings.job_delay,
            "archive_id": None,
            "format": None,
            "range_start": None,
            "range_end": None,
            "inventory_date": None,
        }
        if job_type == "archive-retrieval":
            archive_id = params.get("ArchiveId")
            if not archive_id:
                raise missing("Missing required parameter: ArchiveId")
            archive = self._archive(vault, archive_id)
            row.update(action="ArchiveRetrieval", archive_id=archive_id)
            byte_range = params.get("RetrievalByteRange")
            if byte_range:
                first, last = parse_range(byte_range, r"(\d+)-(\d+)")
                if first % MiB or first > last or last >= archive["size"] or (
                    (last + 1) % MiB and last != archive["size"] - 1
                ):
                    raise invalid(
                        f"Invalid RetrievalByteRange {byte_range}: it must be megabyte aligned "
                        f"within an archive of {archive['size']} bytes"
                    )
                row.update(range_start=first, range_end=last)
        elif job_type == "inventory-retrieval":
            output_format = (params.get("Format") or "JSON").upper()
            if output_format not in ("JSON", "CSV"):
                raise invalid(f"Invalid inventory format: {output_format!r} (JSON or CSV)")
            row.update(
                action="InventoryRetrieval",
                format=output_format,
                inventory_date=now - settings.inventory_lag,
                tier="Standard",
            )
        elif not job_type:
            raise missing("Missing required parameter: Type")
        else:
            raise invalid(f"Invalid job type: {job_type!r}")
        columns = ", ".join(row)
        self.store.execute(
            f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
        )
        return row["id"]

    def _job(self, vault_name: str, job_id: str) -> tuple[VaultRow, Any]:
        vault = self.vault(vault_name)
        row = self.store.query_one("SELECT * FROM jobs WHERE id=? AND vault_id=?", (job_id, vault.id))
        if row is None or time.time() > row["completes"] + OUTPUT_LIFETIME:
            raise not_found(f"The job ID was not found: {job_id}")
        return vault, row

    def _finish_job(self, vault: VaultRow, job: Any) -> Any:
        """Fill in what a completed job knows (output size and hash), once."""
        if job["output_size"] is not None or time.time() < job["completes"]:
            return job
        if job["action"] == "InventoryRetrieval":
            output = self._inventory(vault, job["inventory_date"], job["format"])
            path = self.store.job_output_path(job["id"])
            path.write_bytes(output)
            size, output_hash = len(output), None
        else:
            archive = self._archive_row(job["archive_id"])
            first, last = self._job_range(job, archive)
            size = last - first + 1
            if archive["deleted"] is None and is_tree_aligned(first, last + 1, archive["size"]):
                output_hash = (
                    archive["tree_hash"]
                    if size == archive["size"]
                    else file_tree_hash(self.store.archive_path(archive["id"]), first, last + 1)
                )
            else:
                output_hash = None
        self.store.execute(
            "UPDATE jobs SET output_size=?, output_hash=? WHERE id=?", (size, output_hash, job["id"])
        )
        return self.store.query_one("SELECT * FROM jobs WHERE id=?", (job["id"],))

    @staticmethod
    def _job_range(job: Any, archive: Any) -> tuple[int, int]:
        if job["range_start"] is None:
            return 0, archive["size"] - 1
        return job["range_start"], job["range_end"]

    def _inventory(self, vault: VaultRow, as_of: float, output_format: str) -> bytes:
        rows = self.store.query(
            "SELECT id, description, created, size, tree_hash FROM archives WHERE vault_id=? "
            "AND created<=? AND (deleted IS NULL OR deleted>?) ORDER BY created",
            (vault.id, as_of, as_of),
        )
        if output_format == "CSV":
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash"])
            for r in rows:
                writer.writerow([r["id"], r["description"], iso(r["created"]), r["size"], r["tree_hash"]])
            return text.getvalue().encode()
        inventory = {
            "VaultARN": self.arn(vault.name),
            "InventoryDate": iso(as_of),
            "ArchiveList": [
                {
                    "ArchiveId": r["id"],
                    "ArchiveDescription": r["description"],
                    "CreationDate": iso(r["created"]),
                    "Size": r["size"],
                    "SHA256TreeHash": r["tree_hash"],
                }
                for r in rows
            ],
        }
        return json.dumps(inventory, separators=(",", ":")).encode()

    def _job_dict(self, vault: VaultRow, job: Any) -> dict[str, Any]:
        job = self._finish_job(vault, job)
        completed = time.time() >= job["completes"]
        result: dict[str, Any] = {
            "Action": job["action"],
            "Completed": completed,
            "CreationDate": iso(job["created"]),
            "JobDescription": job["description"],
            "JobId": job["id"],
            "StatusCode": "Succeeded" if completed else "InProgress",
            "StatusMessage": "Succeeded" if completed else None,
            "Tier": job["tier"],
            "VaultARN": self.arn(vault.name),
            "SNSTopic": None,
        }
        if completed:
            result["CompletionDate"] = iso(job["completes"])
        if job["action"] == "ArchiveRetrieval":
            archive = self._archive_row(job["archive_id"])
            first, last = self._job_range(job, archive)
            result.update(
                ArchiveId=job["archive_id"],
                ArchiveSizeInBytes=archive["size"],
                ArchiveSHA256TreeHash=archive["tree_hash"],
                RetrievalByteRange=f"{first}-{last}",
                SHA256TreeHash=job["output_hash"] if completed else None,
            )
        else:
            result.update(
                InventorySizeInBytes=job["output_size"] if completed else None,
                InventoryRetrievalParameters={"Format": job["format"]},
            )
        return result

    def describe_job_dict(self, vault_name: str, job_id: str) -> dict[str, Any]:
        vault, job = self._job(vault_name, job_id)
        return self._job_dict(vault, job)

    def list_jobs_page(
        self,
        vault_name: str,
        marker: str | None,
        limit: int,
        status_code: str | None,
        completed: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        vault = self.vault(vault_name)
        if status_code is not None and status_code not in ("InProgress", "Succeeded", "Failed"):
            raise invalid(f"Invalid statuscode: {status_code!r}")
        if completed is not None and completed not in ("true", "false"):
            raise invalid(f"Invalid completed: {completed!r}")
        now = time.time()
        rows = self.store.query(
            "SELECT * FROM jobs WHERE vault_id=? AND completes+?>=? ORDER BY created, id",
            (vault.id, OUTPUT_LIFETIME, now),
        )
        jobs = [self._job_dict(vault, row) for row in rows]
        if status_code:
            jobs = [job for job in jobs if job["StatusCode"] == status_code]
        if completed:
            jobs = [job for job in jobs if job["Completed"] == (completed == "true")]
        start = 0
        if marker:
            ids = [job["JobId"] for job in jobs]
            if marker not in ids:
                raise invalid(f"Invalid marker: {marker!r}")
            start = ids.index(marker)
        page = jobs[start : start + limit]
        next_marker = jobs[start + limit]["JobId"] if len(jobs) > start + limit else None
        return page, next_marker

    def job_output(
        self, vault_name: str, job_id: str, range_header: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        vault, job = self._job(vault_name, job_id)
        if time.time() < job["completes"]:
            raise invalid(f"The job is not currently available for download: {job_id}")
        job = self._finish_job(vault, job)
        total = job["output_size"]
        first, last = 0, total - 1
        status = 200
        if range_header:
            first, last = parse_range(range_header, r"bytes=(\d+)-(\d+)")
            if first > last or last >= total:
                raise invalid(f"Invalid range {range_header} for output of {total} bytes")
            status = 206
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        if job["action"] == "InventoryRetrieval":
            body = self.store.read_at(self.store.job_output_path(job_id), first, last - first + 1)
            headers["Content-Type"] = "text/csv" if job["format"] == "CSV" else "application/json"
            return status, headers, _maybe_truncated(body, job_id)
        archive = self._archive(vault, job["archive_id"])
        offset = job["range_start"] or 0
        body = self.store.read_at(self.store.archive_path(archive["id"]), offset + first, last - first + 1)
        headers["Content-Type"] = "application/octet-stream"
        headers["x-amz-archive-description"] = archive["description"]
        if job["output_hash"] and is_tree_aligned(first, last + 1, total):
            headers["x-amz-sha256-tree-hash"] = (
                job["output_hash"] if (first, last + 1) == (0, total) else tree_hash(body)
            )
        if settings.corrupt_outputs > 0 and body:
            settings.corrupt_outputs -= 1
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body = bytes(flipped)
            log.warning("emulator: corrupted one byte of the output of job %s on purpose", job_id)
        return status, headers, _maybe_truncated(body, job_id)


def _maybe_truncated(body: bytes, job_id: str) -> bytes:
    if settings.truncate_outputs > 0 and len(body) > 1:
        settings.truncate_outputs -= 1
        log.warning("emulator: truncated the output of job %s on purpose", job_id)
        return body[: len(body) // 2]
    return body


emulated_backends = BackendDict(EmulatedGlacierBackend, "glacier")


def reset() -> None:
    """Forget every vault: used between tests sharing one emulator."""
    calls.clear()
    store = current_store()
    with store.transaction() as db:
        for table in ("vaults", "archives", "uploads", "parts", "jobs"):
            db.execute(f"DELETE FROM {table}")
    for sub in ("archives", "uploads", "jobs"):
        shutil.rmtree(store.root / sub, ignore_errors=True)
        (store.root / sub).mkdir()
