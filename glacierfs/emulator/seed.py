"""``glacierfs emulator seed``: a vault of the emulator filled from an inventory.

Given a vault's inventory as the service sends it (a user's real one, or a
generated one), the emulator's data directory gets a vault holding the same
archives: ids, descriptions, creation dates and sizes kept. Their bodies are
synthetic (zeros, made on demand, see synthetic.py), so no disk is used and the
tree hashes the emulator reports match the bytes it serves. Mounting the
emulator then shows the vault as glacierfs would show the real one: every name,
every collision, every ``_unnamed`` archive, before anything is paid for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from glacierfs import inventoryfile, timestamps

from .store import Store
from .synthetic import zeros_tree_hash
from .vaults import VAULT_NAME

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "123456789012"  # the account moto (and so the emulator) answers for
BATCH = 10_000
VAULT_NAME_HELP = "1 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"


def seed(data_dir: Path, vault: str, inventory: Path, account: str = DEFAULT_ACCOUNT, region: str = "us-east-1") -> int:
    """Add the archives of ``inventory`` (JSON or CSV) to ``vault`` in the emulator's
    data directory, creating the vault if need be; how many. Archives already
    there (by id) are replaced: seeding twice is seeding once."""
    if not VAULT_NAME.fullmatch(vault):
        raise ValueError(f"{vault!r} is not a vault name: {VAULT_NAME_HELP}")
    store = Store(data_dir)
    try:
        with store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO vaults (account, region, name, created) VALUES (?,?,?,?)",
                (account, region, vault, time.time()),
            )
            (vault_id,) = db.execute(
                "SELECT id FROM vaults WHERE account=? AND region=? AND name=?", (account, region, vault)
            ).fetchone()
            count = 0
            batch: list[tuple[Any, ...]] = []
            for item in inventoryfile.iter_archives(inventory):
                row = _archive(item, vault_id)
                if row is None:
                    continue
                batch.append(row)
                if len(batch) == BATCH:
                    count += _insert(db, batch)
            count += _insert(db, batch)
    finally:
        store.close()
    return count


def _archive(item: dict[str, Any], vault_id: int) -> tuple[Any, ...] | None:
    archive_id = item.get("ArchiveId")
    if not isinstance(archive_id, str) or not archive_id:
        return None
    size = item.get("Size")
    size = size if isinstance(size, int) and size > 0 else 1  # Glacier holds no empty archive
    description = item.get("ArchiveDescription")
    created = timestamps.parse_iso(str(item.get("CreationDate") or "")) or time.time()
    return (
        archive_id,
        vault_id,
        description if isinstance(description, str) else "",
        size,
        zeros_tree_hash(size),
        created,
    )


def _insert(db: Any, batch: list[tuple[Any, ...]]) -> int:
    db.executemany(
        "INSERT OR REPLACE INTO archives (id, vault_id, description, size, tree_hash, created, deleted, synthetic) "
        "VALUES (?,?,?,?,?,?,NULL,1)",
        batch,
    )
    count = len(batch)
    batch.clear()
    return count
