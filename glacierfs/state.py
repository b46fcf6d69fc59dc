"""Where a mount keeps what is the user's alone: the catalog in the state
directory, retrieved archives in the cache directory, both private (0700),
and both per account and region: a vault's names mean nothing to another
account, whatever the endpoint."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from glacierfs import lockfile
from glacierfs.catalog import Catalog

log = logging.getLogger(__name__)


def default_state_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "glacierfs"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "glacierfs"


def account_key(account: str, region: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", f"{account}-{region}")[:120]


def legacy_key(endpoint: str | None, region: str, profile: str | None) -> str:
    """What catalogs and caches were keyed by before they were keyed by account:
    the endpoint, region and profile, which two accounts can share."""
    endpoint = endpoint or "aws"
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{region}-{endpoint}").strip("_")[:80]
    digest = hashlib.sha256(f"{region}|{endpoint}|{profile}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or make it 0700 if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
            log.info("%s was mode %o; made it 0700", path, mode)
        except OSError as error:
            log.warning("cannot make %s private (mode %o): %s", path, mode, error)
    return path


def lock_catalog(state_dir: Path, key: str) -> int:
    """Hold the catalog for this mount alone: a second mount on it would take the
    first one's uploads in flight for a crash's leftovers and abort them. The
    lock's descriptor; Busy if another mount holds it."""
    return lockfile.hold(
        state_dir / f"catalog-{key}.lock",
        lambda holder: (
            f"the catalog in {state_dir} is in use by another glacierfs mount (pid {holder}); "
            "mount an account and region once per state directory"
        ),
    )


def _move_sqlite(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        old = source.with_name(source.name + suffix)
        if old.exists():
            old.rename(target.with_name(target.name + suffix))


def open_catalog(state_dir: Path, key: str, old_key: str, listed: list[str], cache_dir: Path | None) -> Catalog:
    """The account's catalog. One left under the old endpoint key ``old_key`` is
    adopted, with the cache beside it (unless ``cache_dir`` was chosen), when its
    vaults are among those ``listed`` for this account (or it has none)."""
    path = state_dir / f"catalog-{key}.sqlite"
    legacy = state_dir / f"catalog-{old_key}.sqlite"
    if not path.exists() and legacy.exists():
        old = Catalog(legacy)
        known = old.vaults() + [name for name, _, _ in old.gone_vaults()]
        old.close()
        if known and not set(known) & set(listed):
            log.warning(
                "left %s alone: none of its vaults (%s) is this account's; "
                "it is adopted when the account it belongs to mounts",
                legacy.name,
                ", ".join(sorted(known)[:5]),
            )
        else:
            _move_sqlite(legacy, path)
            log.warning("adopted the catalog %s (keyed by endpoint) as %s", legacy.name, path.name)
            old_cache, new_cache = default_cache_root() / old_key, default_cache_root() / key
            if cache_dir is None and old_cache.is_dir() and not new_cache.exists():
                old_cache.rename(new_cache)
                log.info("moved the cache %s to %s", old_cache, new_cache)
    return Catalog(path)
