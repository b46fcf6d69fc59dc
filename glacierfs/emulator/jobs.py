"""Jobs: initiate (archive or inventory retrieval), describe and list.

The request side of retrieval: which jobs are valid, and how one is described
while it runs and after. What a completed job serves is in ``outputs``.
"""

from __future__ import annotations

import time
from typing import Any

from glacierfs.treehash import MiB

from .knobs import settings
from .outputs import OUTPUT_LIFETIME, JobOutputsBackend
from .rules import invalid, iso, missing, new_id, parse_range
from .store import VaultRow

TIERS = ("Expedited", "Standard", "Bulk")


class JobsBackend(JobOutputsBackend):
    """Retrieval jobs in a vault, as the Glacier API describes them."""

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
                if (
                    first % MiB
                    or first > last
                    or last >= archive["size"]
                    or ((last + 1) % MiB and last != archive["size"] - 1)
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
        self.store.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return row["id"]

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
