"""Jobs: initiate (archive or inventory retrieval), describe and list.

The request side of retrieval: which jobs are valid, which the account's data
retrieval policy and Expedited capacity admit, and how one is described while it
runs and after. What a completed job serves is in ``outputs``. A description
carries every key the service sends, null where it does not apply: clients such
as boto 2 read them with ``[]``.
"""

from __future__ import annotations

from typing import Any

from glacierfs.treehash import MiB

from .archives import JOB_OUTPUT_LIFETIME
from .capacity import CapacityBackend
from .documents import check_sns_topic
from .inventory import InventoryRange
from .knobs import now, settings
from .outputs import JobOutputsBackend
from .retrieval_policy import RetrievalPolicyBackend
from .rules import invalid, iso, missing, new_id, parse_range
from .store import VaultRow

TIERS = ("Expedited", "Standard", "Bulk")


class JobsBackend(JobOutputsBackend, RetrievalPolicyBackend, CapacityBackend):
    """Retrieval jobs in a vault, as the Glacier API describes them."""

    def _archive_job(self, vault: VaultRow, params: dict[str, Any], row: dict[str, Any]) -> int:
        """Fill in an archive retrieval; the bytes it retrieves."""
        archive_id = params.get("ArchiveId")
        if not archive_id:
            raise missing("Missing required parameter: ArchiveId")
        archive = self._archive(vault, archive_id)
        row.update(action="ArchiveRetrieval", archive_id=archive_id)
        byte_range = params.get("RetrievalByteRange")
        if not byte_range:
            return int(archive["size"])
        first, last = parse_range(byte_range, r"(\d+)-(\d+)")
        if first % MiB or first > last or last >= archive["size"] or ((last + 1) % MiB and last != archive["size"] - 1):
            raise invalid(
                f"Invalid RetrievalByteRange {byte_range}: it must be megabyte aligned "
                f"within an archive of {archive['size']} bytes"
            )
        row.update(range_start=first, range_end=last)
        return last - first + 1

    def initiate_job_checked(self, vault_name: str, params: dict[str, Any]) -> str:
        vault = self.vault(vault_name)
        job_type = params.get("Type")
        tier = params.get("Tier") or "Standard"
        if tier not in TIERS:
            raise invalid(f"Invalid tier: {tier!r} (one of {', '.join(TIERS)})")
        topic = params.get("SNSTopic")
        started = now()
        row: dict[str, Any] = {
            "id": new_id(69),
            "vault_id": vault.id,
            "tier": tier,
            "description": params.get("Description") or None,
            "created": started,
            "completes": started + settings.job_delay,
            "sns_topic": check_sns_topic(topic) if topic is not None else None,
        }
        if job_type == "archive-retrieval":
            size = self._archive_job(vault, params, row)
            self.check_expedited_capacity(tier)
            self.check_retrieval_policy(tier, size)
        elif job_type == "inventory-retrieval":
            output_format = (params.get("Format") or "JSON").upper()
            if output_format not in ("JSON", "CSV"):
                raise invalid(f"Invalid inventory format: {output_format!r} (JSON or CSV)")
            wanted = InventoryRange.from_params(params.get("InventoryRetrievalParameters"))
            row.update(
                action="InventoryRetrieval",
                format=output_format,
                inventory_date=started - settings.inventory_lag,
                inventory_params=wanted.to_json(),
                tier="Standard",
            )
            self.record_inventory(vault, row["inventory_date"])
        elif not job_type:
            raise missing("Missing required parameter: Type")
        else:
            raise invalid(f"Invalid job type: {job_type!r}")
        columns = ", ".join(row)
        self.store.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return str(row["id"])

    def _job_dict(self, vault: VaultRow, job: Any) -> dict[str, Any]:
        job = self._finish_job(vault, job)
        completed = now() >= job["completes"]
        result: dict[str, Any] = {
            "Action": job["action"],
            "ArchiveId": None,
            "ArchiveSHA256TreeHash": None,
            "ArchiveSizeInBytes": None,
            "Completed": completed,
            "CompletionDate": iso(job["completes"]) if completed else None,
            "CreationDate": iso(job["created"]),
            "InventoryRetrievalParameters": None,
            "InventorySizeInBytes": None,
            "JobDescription": job["description"],
            "JobId": job["id"],
            "RetrievalByteRange": None,
            "SHA256TreeHash": None,
            "SNSTopic": job["sns_topic"],
            "StatusCode": "Succeeded" if completed else "InProgress",
            "StatusMessage": "Succeeded" if completed else None,
            "Tier": job["tier"],
            "VaultARN": self.arn(vault.name),
        }
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
            wanted = InventoryRange.from_json(job["inventory_params"])
            result.update(
                InventorySizeInBytes=job["output_size"] if completed else None,
                InventoryRetrievalParameters={
                    "Format": job["format"],
                    "StartDate": wanted.start_date,
                    "EndDate": wanted.end_date,
                    "Limit": wanted.limit,
                    # Where the next job continues (null when nothing is left), as the service words it.
                    "Marker": job["next_marker"],
                },
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
        rows = self.store.query(
            "SELECT * FROM jobs WHERE vault_id=? AND completes+?>=? ORDER BY created, id",
            (vault.id, JOB_OUTPUT_LIFETIME, now()),
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
