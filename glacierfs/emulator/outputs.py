"""What a completed job serves: its output, whole or by range, with the tree hashes Glacier sends.

Apart from initiating and listing jobs because this is where the emulator's
faults are served (corrupted and truncated outputs), and where a job's output,
once complete, is fixed: size and hash computed once, inventory written once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from glacierfs.treehash import MiB, file_tree_hash, tree_hash

from .archives import ArchivesBackend
from .inventory import inventory_body
from .knobs import settings
from .rules import invalid, not_found, parse_range
from .store import VaultRow

log = logging.getLogger(__name__)

OUTPUT_LIFETIME = 24 * 3600


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


class JobOutputsBackend(ArchivesBackend):
    """A job's lifetime and what it yields once complete."""

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
        self.store.execute("UPDATE jobs SET output_size=?, output_hash=? WHERE id=?", (size, output_hash, job["id"]))
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
        return inventory_body(self.arn(vault.name), as_of, rows, output_format)

    def job_output(self, vault_name: str, job_id: str, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
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
