"""Vault lock: initiate, complete, abort and get, and the lock policy enforced on DeleteArchive.

InitiateVaultLock installs a policy in the state ``InProgress`` for 24 hours
(the lock id expires with it and the policy is removed); CompleteVaultLock with
that id makes it ``Locked`` for ever; AbortVaultLock removes it only while in
progress. The policy is in force in both states, so a test of an in-progress
lock sees what the locked one will do. This layer sits on top of archives
because what a lock guards is their deletion.
"""

from __future__ import annotations

import logging
from typing import Any

from .archives import ArchivesBackend
from .documents import check_policy
from .knobs import now
from .lockpolicy import denying_statement
from .rules import access_denied, invalid, iso, new_id, not_found
from .store import VaultRow

log = logging.getLogger(__name__)

LOCK_WINDOW = 24 * 3600
IN_PROGRESS = "InProgress"
LOCKED = "Locked"
DAY = 24 * 3600


class VaultLockBackend(ArchivesBackend):
    """A vault's lock policy and its state."""

    def _lock(self, vault: VaultRow) -> Any:
        """The vault's lock, or None; an in-progress lock past its 24 hours is gone."""
        row = self.store.query_one("SELECT * FROM vault_locks WHERE vault_id=?", (vault.id,))
        if row is not None and row["state"] == IN_PROGRESS and now() >= row["expires"]:
            self.store.execute("DELETE FROM vault_locks WHERE vault_id=? AND lock_id=?", (vault.id, row["lock_id"]))
            log.info("emulator: the vault lock of %s expired before it was completed", vault.name)
            return None
        return row

    def initiate_vault_lock(self, vault_name: str, policy: Any) -> str:
        vault = self.vault(vault_name)
        document = check_policy(policy, "vault lock policy")
        lock = self._lock(vault)
        if lock is not None:
            raise access_denied(
                f"The vault lock of {self.arn(vault_name)} is {lock['state']}: "
                + ("it can never change" if lock["state"] == LOCKED else "abort it before initiating another")
            )
        lock_id = new_id(12)
        created = now()
        self.store.execute(
            "INSERT OR REPLACE INTO vault_locks (vault_id, lock_id, policy, state, created, expires) "
            "VALUES (?,?,?,?,?,?)",
            (vault.id, lock_id, document, IN_PROGRESS, created, created + LOCK_WINDOW),
        )
        return lock_id

    def complete_vault_lock(self, vault_name: str, lock_id: str) -> None:
        vault = self.vault(vault_name)
        lock = self._lock(vault)
        if lock is None:
            raise invalid(f"No vault lock is in progress for {self.arn(vault_name)}")
        if lock["state"] == LOCKED:
            if lock["lock_id"] != lock_id:
                raise access_denied(f"The vault lock of {self.arn(vault_name)} is locked with another lock id")
            return  # completing again with the same id is no error
        if lock["lock_id"] != lock_id:
            raise invalid(f"Invalid lock id {lock_id!r} for the vault lock of {self.arn(vault_name)}")
        self.store.execute("UPDATE vault_locks SET state=?, expires=NULL WHERE vault_id=?", (LOCKED, vault.id))

    def abort_vault_lock(self, vault_name: str) -> None:
        vault = self.vault(vault_name)
        lock = self._lock(vault)
        if lock is None:
            return  # nothing in progress: aborting is no error
        if lock["state"] == LOCKED:
            raise access_denied(f"The vault lock of {self.arn(vault_name)} is locked: it can never be aborted")
        self.store.execute("DELETE FROM vault_locks WHERE vault_id=?", (vault.id,))

    def get_vault_lock(self, vault_name: str) -> dict[str, Any]:
        vault = self.vault(vault_name)
        lock = self._lock(vault)
        if lock is None:
            raise not_found(f"No vault lock policy is set for the vault: {self.arn(vault_name)}")
        return {
            "Policy": lock["policy"],
            "State": lock["state"],
            "ExpirationDate": iso(lock["expires"]) if lock["expires"] is not None else None,
            "CreationDate": iso(lock["created"]),
        }

    def delete_archive(self, vault_name: str, archive_id: str) -> None:
        vault = self.vault(vault_name)
        lock = self._lock(vault)
        archive = self.store.query_one(
            "SELECT created FROM archives WHERE id=? AND vault_id=? AND deleted IS NULL", (archive_id, vault.id)
        )
        if lock is not None and archive is not None:
            age_days = int((now() - archive["created"]) // DAY)
            statement = denying_statement(lock["policy"], age_days)
            if statement is not None:
                raise access_denied(
                    f"Not authorized to perform glacier:DeleteArchive on {self.arn(vault_name)}: explicit deny "
                    f"by {statement} of the vault lock policy ({lock['state']}); the archive is {age_days} days old"
                )
        super().delete_archive(vault_name, archive_id)
