"""Multipart uploads: initiate, upload parts, complete, abort, list uploads and parts.

Parts land at their offset in the upload's file, so completing one is a check of
the part layout and tree hash, then a rename into an archive; that is why this
area sits on top of archives rather than beside them.
"""

from __future__ import annotations

import os
from typing import Any

from glacierfs.treehash import MiB, combine

from .archives import ArchivesBackend
from .knobs import now
from .rules import GiB, check_description, invalid, iso, missing, new_id, not_found, parse_range

MAX_PART_SIZE = 4 * GiB
MAX_PARTS = 10_000


class MultipartBackend(ArchivesBackend):
    """Uploads in progress: their parts, and the archive they become."""

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
            (upload_id, vault.id, description, size, now()),
        )
        return upload_id

    def _upload(self, vault_name: str, upload_id: str) -> Any:
        vault = self.vault(vault_name)
        row = self.store.query_one("SELECT * FROM uploads WHERE id=? AND vault_id=?", (upload_id, vault.id))
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
            raise invalid(f"Content-Range: {content_range} is incompatible with part size {part_size}")
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
            raise invalid(f"Archive size {size} does not match the {expected_start} bytes uploaded in parts")
        actual = combine([bytes.fromhex(part["tree_hash"]) for part in parts]).hex()
        if tree_hash.lower() != actual:
            raise invalid(f"Checksum mismatch: x-amz-sha256-tree-hash {tree_hash} but the parts combine to {actual}")
        archive_id = new_id(103)
        source = self.store.upload_path(upload_id)
        os.truncate(source, size)
        os.replace(source, self.store.archive_path(archive_id))
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO archives (id, vault_id, description, size, tree_hash, created) VALUES (?,?,?,?,?,?)",
                (archive_id, upload["vault_id"], upload["description"], size, actual, now()),
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

    def list_parts_page(self, vault_name: str, upload_id: str, marker: str | None, limit: int) -> dict[str, Any]:
        upload = self._upload(vault_name, upload_id)
        start = int(marker) if marker and marker.isdigit() else 0
        rows = self.store.query(
            "SELECT start, size, tree_hash FROM parts WHERE upload_id=? AND start>=? ORDER BY start LIMIT ?",
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
