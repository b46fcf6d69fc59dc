"""Archives: a single-request upload, checked against its hashes, and deletion.

Separate from multipart uploads because an archive, however it arrived, is what
jobs read; the body-hash check here is the one both upload paths apply.
"""

from __future__ import annotations

import time
from typing import Any

from glacierfs.treehash import part_hashes

from .rules import GiB, check_description, invalid, missing, new_id, not_found
from .store import VaultRow
from .vaults import VaultsBackend

MAX_SINGLE_UPLOAD = 4 * GiB


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

    def delete_archive(self, vault_name: str, archive_id: str) -> None:
        vault = self.vault(vault_name)
        self._archive(vault, archive_id)
        self.store.execute("UPDATE archives SET deleted=? WHERE id=?", (time.time(), archive_id))
        self.store.remove(self.store.archive_path(archive_id))
