"""Archives: a single-request upload, checked against its hashes, and deletion.

Separate from multipart uploads because an archive, however it arrived, is what
jobs read; the body-hash check here is the one both upload paths apply. A
deleted archive's bytes stay while a job that reads them has not expired: the
service keeps a finished job's output downloadable after the archive is gone.
"""

from __future__ import annotations

from typing import Any

from glacierfs.treehash import part_hashes

from .knobs import now
from .rules import GiB, check_description, invalid, missing, new_id, not_found
from .store import VaultRow
from .vaults import VaultsBackend

MAX_SINGLE_UPLOAD = 4 * GiB
# A job's output stays downloadable this long after the job completes.
JOB_OUTPUT_LIFETIME = 24 * 3600


class ArchivesBackend(VaultsBackend):
    """Archives in a vault: written once, read by jobs, deleted."""

    def _check_body_hashes(self, body: bytes, tree_hash: str | None, linear: str | None) -> str:
        if not tree_hash:
            raise missing("Missing required header: x-amz-sha256-tree-hash")
        actual_linear, actual_tree = part_hashes(body)
        if linear and linear.lower() != actual_linear:
            raise invalid(f"Checksum mismatch: x-amz-content-sha256 {linear} but the body hashes to {actual_linear}")
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
            "INSERT INTO archives (id, vault_id, description, size, tree_hash, created) VALUES (?,?,?,?,?,?)",
            (archive_id, vault.id, description, len(body), actual, now()),
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

    def delete_archive(self, vault_name: str, archive_id: str) -> None:
        """Idempotent, as the reference says: deleting an archive already deleted is no error."""
        vault = self.vault(vault_name)
        row = self.store.query_one("SELECT deleted FROM archives WHERE id=? AND vault_id=?", (archive_id, vault.id))
        if row is None:
            raise not_found(f"Archive not found: {archive_id}")
        if row["deleted"] is None:
            self.store.execute("UPDATE archives SET deleted=? WHERE id=?", (now(), archive_id))
        self._drop_unread_blobs(vault, archive_id)

    def _drop_unread_blobs(self, vault: VaultRow, archive_id: str) -> None:
        """Remove the bytes of this archive, and of the vault's deleted ones, once no job serves them."""
        horizon = now() - JOB_OUTPUT_LIFETIME
        if not self.store.query_one("SELECT 1 FROM jobs WHERE archive_id=? AND completes>=?", (archive_id, horizon)):
            self.store.remove(self.store.archive_path(archive_id))
        rows = self.store.query(
            "SELECT j.archive_id FROM jobs j JOIN archives a ON a.id=j.archive_id "
            "WHERE j.vault_id=? AND a.deleted IS NOT NULL GROUP BY j.archive_id HAVING MAX(j.completes)<?",
            (vault.id, horizon),
        )
        for row in rows:
            self.store.remove(self.store.archive_path(row["archive_id"]))
