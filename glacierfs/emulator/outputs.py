"""What a completed job serves: its output, whole or by range, with the tree hashes Glacier sends.

Apart from initiating and listing jobs because this is where the emulator's
faults are served (corrupted and truncated outputs), and where a job's output,
once complete, is fixed: size and hash computed once, inventory written once.
Ranges follow RFC 2616 as the service does: an end past the output is served
clipped, an open end (``bytes=N-``) runs to the end, a suffix (``bytes=-N``)
is the last N bytes; only a range that starts past the end is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from glacierfs.treehash import MiB, file_tree_hash, tree_hash

from .archives import JOB_OUTPUT_LIFETIME, ArchivesBackend
from .inventory import InventoryRange, encode_marker, inventory_body
from .inventory_writer import PAGE, write_inventory
from .knobs import now, settings
from .rules import invalid, not_found
from .store import VaultRow
from .synthetic import body_tree_hash, read_body

log = logging.getLogger(__name__)

RANGE = re.compile(r"bytes=(\d*)-(\d*)")


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
        if row is None or now() > row["completes"] + JOB_OUTPUT_LIFETIME:
            raise not_found(f"The job ID was not found: {job_id}")
        return vault, row

    def _finish_job(self, vault: VaultRow, job: Any) -> Any:
        """Fill in what a completed job knows (output size and hash), once."""
        if job["output_size"] is not None or now() < job["completes"]:
            return job
        next_marker = None
        if job["action"] == "InventoryRetrieval":
            wanted = InventoryRange.from_json(job["inventory_params"])
            path = self.store.job_output_path(job["id"])
            size, next_marker = self._inventory(vault, job["inventory_date"], job["format"], wanted, path)
            output_hash = None
        else:
            archive = self._archive_row(job["archive_id"])
            first, last = self._job_range(job, archive)
            size = last - first + 1
            if is_tree_aligned(first, last + 1, archive["size"]):
                output_hash = (
                    archive["tree_hash"]
                    if size == archive["size"]
                    else body_tree_hash(archive, first, last + 1)
                    or file_tree_hash(self.store.archive_path(archive["id"]), first, last + 1)
                )
            else:
                output_hash = None
        self.store.execute(
            "UPDATE jobs SET output_size=?, output_hash=?, next_marker=? WHERE id=?",
            (size, output_hash, next_marker, job["id"]),
        )
        return self.store.query_one("SELECT * FROM jobs WHERE id=?", (job["id"],))

    @staticmethod
    def _job_range(job: Any, archive: Any) -> tuple[int, int]:
        if job["range_start"] is None:
            return 0, archive["size"] - 1
        return job["range_start"], job["range_end"]

    def _inventory(
        self, vault: VaultRow, as_of: float, output_format: str, wanted: InventoryRange, path: Path
    ) -> tuple[int, str | None]:
        """Write the inventory to ``path`` a page of archives at a time (a seeded vault
        holds millions): its size, and the marker of the rest."""
        rest: list[str] = []

        def pages() -> Iterator[list[Any]]:
            left = int(wanted.limit) if wanted.limit is not None else None
            after: tuple[float, str] = (float("-inf"), "")
            while page := self.store.query(
                "SELECT id, description, created, size, tree_hash FROM archives WHERE vault_id=? "
                "AND created<=? AND (deleted IS NULL OR deleted>?) AND (created, id) > (?, ?) "
                "ORDER BY created, id LIMIT ?",
                (vault.id, as_of, as_of, *after, PAGE),
            ):
                after = (page[-1]["created"], page[-1]["id"])
                if left == 0:  # the limit fell at the end of the last page: the rest starts here
                    chosen, _ = replace(wanted, limit=None).select(page)
                    if chosen:
                        rest.append(encode_marker(chosen[0]["created"], chosen[0]["id"]))
                        return
                    continue
                chosen, marker = replace(wanted, limit=None if left is None else str(left)).select(page)
                yield chosen
                if marker is not None:
                    rest.append(marker)
                    return
                if left is not None:
                    left -= len(chosen)

        size = write_inventory(path, self.arn(vault.name), as_of, pages(), output_format, inventory_body)
        return size, rest[0] if rest else None

    @staticmethod
    def _output_range(range_header: str | None, total: int) -> tuple[int, int] | None:
        """The inclusive byte range a Range header asks of ``total`` bytes, clipped; None for the whole."""
        if not range_header:
            return None
        match = RANGE.fullmatch(range_header.strip())
        if not match or not (match.group(1) or match.group(2)):
            raise invalid(f"Invalid range: {range_header!r}")
        if not match.group(1):  # a suffix: the last N bytes
            length = int(match.group(2))
            if length == 0:
                raise invalid(f"Invalid range {range_header} for output of {total} bytes")
            return max(0, total - length), total - 1
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else total - 1
        if first > last or first >= total:
            raise invalid(f"Invalid range {range_header} for output of {total} bytes")
        return first, min(last, total - 1)

    def job_output(self, vault_name: str, job_id: str, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
        vault, job = self._job(vault_name, job_id)
        if now() < job["completes"]:
            raise invalid(f"The job is not currently available for download: {job_id}")
        job = self._finish_job(vault, job)
        total = job["output_size"]
        asked = self._output_range(range_header, total)
        first, last = asked or (0, total - 1)
        status = 206 if asked else 200
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        if job["action"] == "InventoryRetrieval":
            body = self.store.read_at(self.store.job_output_path(job_id), first, last - first + 1)
            headers["Content-Type"] = "text/csv" if job["format"] == "CSV" else "application/json"
            return status, headers, _maybe_truncated(body, job_id)
        archive = self._archive_row(job["archive_id"])  # deleted or not: the output stays
        offset = job["range_start"] or 0
        synthetic = read_body(archive, offset + first, last - first + 1)
        body = (
            synthetic
            if synthetic is not None
            else self.store.read_at(self.store.archive_path(archive["id"]), offset + first, last - first + 1)
        )
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
