"""The vaults: the top level of the mount, as Glacier lists them.

ListVaults is asked at most once per TTL. While Glacier cannot be reached the
last list (kept in the catalog) is served, and the outage is logged once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time

from glacierfs import errors
from glacierfs.catalog import Catalog
from glacierfs.glacier import GlacierClient
from glacierfs.inventory import Inventories

log = logging.getLogger(__name__)

VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")


def vault_name_problem(name: str) -> str | None:
    """Which naming rule ``name`` breaks, or None."""
    if not 1 <= len(name) <= 255:
        return f"a vault name has 1 to 255 characters, not {len(name)}"
    if not VAULT_NAME.fullmatch(name):
        bad = sorted({char for char in name if not VAULT_NAME.fullmatch(char)})
        return f"a vault name holds only a-z, A-Z, 0-9, '_', '-' and '.', not {''.join(bad)!r}"
    return None


class Vaults:
    def __init__(self, glacier: GlacierClient, catalog: Catalog, inventories: Inventories, ttl: float) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.inventories = inventories
        self.ttl = ttl
        self._listed_at = 0.0
        self._failing = False  # logged once per outage
        self._lock = threading.Lock()

    def names(self, force: bool = False) -> list[str]:
        """The vault list, from Glacier at most once per TTL unless forced."""
        if force or time.monotonic() - self._listed_at > self.ttl:
            try:
                listed = [vault.name for vault in self.glacier.list_vaults()]
            except errors.ServiceUnavailable as error:
                self._listed_at = time.monotonic()
                with self._lock:
                    first, self._failing = not self._failing, True
                if first:
                    log.warning(
                        "cannot list the vaults (%s); serving the last list from the catalog "
                        "until Glacier answers again",
                        error,
                    )
                return self.catalog.vaults()
            self.catalog.set_vaults(listed)
            self._listed_at = time.monotonic()
            with self._lock:
                recovered, self._failing = self._failing, False
            if recovered:
                log.info("Glacier lists the vaults again")
        return self.catalog.vaults()

    def require(self, vault: str) -> None:
        """NotFound unless ``vault`` exists; a vault looked into has its inventory kept up."""
        if not self.catalog.has_vault(vault) and not (vault_name_problem(vault) is None and vault in self.names()):
            raise errors.NotFound(f"no vault named {vault!r}")
        with contextlib.suppress(errors.GlacierFSError):  # logged; the catalog serves meanwhile
            self.inventories.seen(vault)

    def create(self, vault: str) -> None:
        problem = vault_name_problem(vault)
        if problem:
            raise errors.InvalidName(f"cannot create vault {vault!r}: {problem}")
        if vault in self.names():
            raise errors.AlreadyExists(f"vault {vault!r} exists")
        self.glacier.create_vault(vault)
        self.catalog.add_vault(vault)
        self.inventories.created_here(vault)
        log.info("created vault %s", vault)

    def delete(self, vault: str) -> None:
        self.require(vault)
        if not self.catalog.vault_is_empty(vault):
            raise errors.NotEmpty(f"vault {vault} still holds files or directories")
        try:
            self.glacier.delete_vault(vault)
        except errors.NotEmpty as error:
            raise errors.NotEmpty(
                f"Glacier refuses to delete vault {vault}: it held archives at its last "
                f"inventory or was written since ({error})"
            ) from error
        self.catalog.remove_vault(vault)
        log.info("deleted vault %s", vault)
