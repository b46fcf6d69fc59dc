"""What Glacier answers, as typed records: the results of glacier.py's calls,
free of boto3, so that any layer can hold them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TIERS = ("Expedited", "Standard", "Bulk")  # retrieval tiers, fastest first


@dataclass(frozen=True)
class Vault:
    name: str
    created: str
    # As of the vault's last inventory; None before its first one, as the service reports them.
    archive_count: int | None
    size: int | None
    arn: str = ""  # arn:aws:glacier:REGION:ACCOUNT:vaults/NAME
    last_inventory: str | None = None

    @property
    def account(self) -> str | None:
        fields = self.arn.split(":")
        return fields[4] if len(fields) > 5 and fields[4] else None


@dataclass(frozen=True)
class Archive:
    archive_id: str
    tree_hash: str


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload Glacier holds open (ListMultipartUploads)."""

    upload_id: str
    description: str
    created: float  # seconds since the epoch; 0 when the service gives none


@dataclass(frozen=True)
class Job:
    job_id: str
    action: str  # ArchiveRetrieval | InventoryRetrieval
    status: str  # InProgress | Succeeded | Failed
    completed: bool
    tier: str
    created: str
    completed_at: str | None
    archive_id: str | None
    archive_size: int | None
    archive_tree_hash: str | None
    tree_hash: str | None  # of the retrieved range, when it is tree-hash aligned
    byte_range: tuple[int, int] | None  # inclusive
    inventory_size: int | None
    status_message: str | None
    inventory_format: str | None = None  # JSON or CSV, for inventory jobs
    # StartDate, EndDate, Limit or Marker: an inventory of part of the vault only.
    inventory_partial: bool = False

    @classmethod
    def from_response(cls, raw: dict[str, Any]) -> Job:
        byte_range = None
        if raw.get("RetrievalByteRange"):
            first, last = raw["RetrievalByteRange"].split("-")
            byte_range = (int(first), int(last))
        return cls(
            job_id=raw["JobId"],
            action=raw["Action"],
            status=raw["StatusCode"],
            completed=bool(raw.get("Completed")),
            tier=raw.get("Tier") or "Standard",
            created=raw.get("CreationDate", ""),
            completed_at=raw.get("CompletionDate"),
            archive_id=raw.get("ArchiveId"),
            archive_size=raw.get("ArchiveSizeInBytes"),
            archive_tree_hash=raw.get("ArchiveSHA256TreeHash"),
            tree_hash=raw.get("SHA256TreeHash"),
            byte_range=byte_range,
            inventory_size=raw.get("InventorySizeInBytes"),
            status_message=raw.get("StatusMessage"),
            inventory_format=(raw.get("InventoryRetrievalParameters") or {}).get("Format"),
            inventory_partial=any(
                (raw.get("InventoryRetrievalParameters") or {}).get(key)
                for key in ("StartDate", "EndDate", "Limit", "Marker")
            ),
        )


@dataclass(frozen=True)
class VaultNotifications:
    topic: str  # an SNS topic ARN
    events: tuple[str, ...]  # ArchiveRetrievalCompleted, InventoryRetrievalCompleted


@dataclass(frozen=True)
class VaultLock:
    state: str  # InProgress | Locked
    policy: str  # the lock policy, a JSON document
    created: str
    expires: str | None  # an in-progress lock lapses then; None once locked


@dataclass(frozen=True)
class RetrievalPolicy:
    """The account's data retrieval policy in this region."""

    strategy: str  # None | FreeTier | BytesPerHour
    bytes_per_hour: int | None

    @property
    def summary(self) -> str:
        if self.strategy == "BytesPerHour":
            return f"BytesPerHour: at most {self.bytes_per_hour} bytes retrieved an hour"
        if self.strategy == "FreeTier":
            return "FreeTier: no more than the free tier allows"
        return f"{self.strategy}: no limit"


@dataclass(frozen=True)
class CapacityUnit:
    capacity_id: str
    start: str
    expires: str


@dataclass(frozen=True)
class JobOutput:
    body: bytes
    tree_hash: str | None  # sent by the service only for tree-hash aligned ranges
    content_range: str | None
    description: str | None
