"""Vaults: create, describe, list and delete, and the name rules CreateVault enforces.

The bottom layer of the backend: every other area finds its vault here, and the
store every area shares is reached through it. A vault's figures (archive count
and size) are those of its last inventory, as the service reports them: null
until the first inventory job, then fixed until the next one.
"""

from __future__ import annotations

import re
from typing import Any

from moto.glacier.models import GlacierBackend

from .knobs import now
from .rules import invalid, iso, limit_exceeded, not_found
from .store import Store, VaultRow, current_store

MAX_VAULTS = 1_000
VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")


class VaultsBackend(GlacierBackend):
    """One account's vaults in one region, kept in the shared Store."""

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

    def create_vault(self, vault_name: str) -> None:
        if not VAULT_NAME.fullmatch(vault_name):
            raise invalid("Invalid vault name: 1 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.'")
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
                raise limit_exceeded("Too many vaults")
            db.execute(
                "INSERT INTO vaults (account, region, name, created) VALUES (?,?,?,?)",
                (self.account_id, self.region_name, vault_name, now()),
            )

    def describe_vault_dict(self, vault_name: str) -> dict[str, Any]:
        vault = self.vault(vault_name)
        return self._vault_dict(vault)

    def _vault_dict(self, vault: VaultRow) -> dict[str, Any]:
        row = self.store.query_one(
            "SELECT inventory_date, inventory_count, inventory_size FROM vaults WHERE id=?", (vault.id,)
        )
        taken = row["inventory_date"] if row else None
        return {
            "CreationDate": iso(vault.created),
            "LastInventoryDate": iso(taken) if taken is not None else None,
            "NumberOfArchives": row["inventory_count"] if taken is not None else None,
            "SizeInBytes": row["inventory_size"] if taken is not None else None,
            "VaultARN": self.arn(vault.name),
            "VaultName": vault.name,
        }

    def record_inventory(self, vault: VaultRow, as_of: float) -> None:
        """An inventory of the vault as of ``as_of`` was taken: DescribeVault reports it, unless a newer one was."""
        with self.store.transaction() as db:
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM archives WHERE vault_id=? "
                "AND created<=? AND (deleted IS NULL OR deleted>?)",
                (vault.id, as_of, as_of),
            ).fetchone()
            db.execute(
                "UPDATE vaults SET inventory_date=?, inventory_count=?, inventory_size=? "
                "WHERE id=? AND (inventory_date IS NULL OR inventory_date<=?)",
                (as_of, count, size, vault.id, as_of),
            )

    def list_vault_page(self, marker: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        rows = self.store.query(
            "SELECT id, name, created FROM vaults WHERE account=? AND region=? AND name>? ORDER BY name LIMIT ?",
            (self.account_id, self.region_name, marker or "", limit + 1),
        )
        page = [self._vault_dict(VaultRow(r["id"], r["name"], r["created"])) for r in rows[:limit]]
        return page, (rows[limit - 1]["name"] if len(rows) > limit else None)

    def delete_vault(self, vault_name: str) -> None:
        vault = self.vault(vault_name)
        with self.store.transaction() as db:
            live = db.execute(
                "SELECT 1 FROM archives WHERE vault_id=? AND deleted IS NULL LIMIT 1", (vault.id,)
            ).fetchone()
            if live:
                raise invalid(f"Vault not empty or recently written to: {self.arn(vault_name)}")
            for table in ("jobs", "tags", "vault_documents", "vault_locks"):
                db.execute(f"DELETE FROM {table} WHERE vault_id=?", (vault.id,))
            db.execute("DELETE FROM vaults WHERE id=?", (vault.id,))
