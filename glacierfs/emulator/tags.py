"""Vault tags: add, list and remove, within the service's limits.

Tags are key-value pairs on a vault, at most 50 of them. Adding a key the vault
already has overwrites its value; removing a key it lacks is no error.
"""

from __future__ import annotations

from typing import Any

from .rules import invalid, limit_exceeded, missing
from .vaults import VaultsBackend

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256


def _check_tag(key: Any, value: Any) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise invalid(f"Invalid tag key: {key!r} (1 to {MAX_KEY} characters)")
    if key.lower().startswith("aws:"):
        raise invalid(f"Invalid tag key: {key!r} (the prefix 'aws:' is reserved)")
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise invalid(f"Invalid tag value for {key!r}: at most {MAX_VALUE} characters")


class TagsBackend(VaultsBackend):
    """A vault's tags, kept in the shared Store."""

    def add_tags(self, vault_name: str, tags: Any) -> None:
        vault = self.vault(vault_name)
        if tags is None:
            raise missing("Missing required parameter: Tags")
        if not isinstance(tags, dict):
            raise invalid("Invalid Tags: a map of keys to values")
        for key, value in tags.items():
            _check_tag(key, value)
        with self.store.transaction() as db:
            existing = {row[0] for row in db.execute("SELECT key FROM tags WHERE vault_id=?", (vault.id,))}
            if len(existing | set(tags)) > MAX_TAGS:
                raise limit_exceeded(f"The vault would have more than {MAX_TAGS} tags: {self.arn(vault_name)}")
            db.executemany(
                "INSERT OR REPLACE INTO tags (vault_id, key, value) VALUES (?,?,?)",
                [(vault.id, key, value) for key, value in tags.items()],
            )

    def list_tags(self, vault_name: str) -> dict[str, str]:
        vault = self.vault(vault_name)
        rows = self.store.query("SELECT key, value FROM tags WHERE vault_id=? ORDER BY key", (vault.id,))
        return {row["key"]: row["value"] for row in rows}

    def remove_tags(self, vault_name: str, keys: Any) -> None:
        vault = self.vault(vault_name)
        if keys is None:
            raise missing("Missing required parameter: TagKeys")
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise invalid("Invalid TagKeys: a list of tag keys")
        with self.store.transaction() as db:
            db.executemany("DELETE FROM tags WHERE vault_id=? AND key=?", [(vault.id, key) for key in keys])
