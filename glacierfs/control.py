"""The control surface: glacierfs's extended attributes, and the status they
carry. The names and the states are defined here and nowhere else; the
`status`, `retrieve` and `refresh` commands (client.py) are this module's
client, and read them through ``Attr`` and ``state_of``.

- the mount's root: ``user.glacier.status``, JSON of uploads, jobs, cache, budget;
- a vault: ``user.glacier.inventory`` (a job pending, `downloading …`, `applying …`,
  or the applied inventory's date),
  and setting ``user.glacier.refresh`` asks for a new inventory; the vault's own
  settings in Glacier: ``tag.KEY``, ``notifications`` and ``access-policy``
  (JSON) to get, set and remove; ``lock``; and the figures of Glacier's last
  inventory, ``archives``, ``bytes``, ``last-inventory``, with ``created``.
  Reading these asks Glacier (vaultsettings.py keeps them for a moment), so
  only vault directories carry them;
- a file: ``state``, ``archive-id``, ``tree-hash``, ``created``, and setting
  ``user.glacier.retrieve`` to a tier thaws it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

from glacierfs import errors, timestamps
from glacierfs.catalog import EMPTY, IN_PROGRESS, MISSING, QUEUED, STORED, SUCCEEDED, UNVERIFIED, UPLOADING
from glacierfs.paths import split

if TYPE_CHECKING:  # the client (client.py) imports this module: it stays light
    from glacierfs.catalog import Catalog, Entry
    from glacierfs.inventory import Inventories
    from glacierfs.openfiles import OpenFiles
    from glacierfs.outcomes import Outcomes
    from glacierfs.retrieval import Retriever
    from glacierfs.vfs import GlacierFS


class Attr(StrEnum):
    STATUS = "user.glacier.status"
    # On the root: the catalog's path and the endpoint, for `glacierfs export` (export.py).
    SOURCE = "user.glacier.source"
    # On the root: the write-back queue, JSON; setting it to `now` sends every queued file
    # at once (`glacierfs umount` drains the queue so).
    QUEUE = "user.glacier.queue"
    INVENTORY = "user.glacier.inventory"
    REFRESH = "user.glacier.refresh"
    RETRIEVE = "user.glacier.retrieve"
    STATE = "user.glacier.state"
    ARCHIVE_ID = "user.glacier.archive-id"
    TREE_HASH = "user.glacier.tree-hash"
    CREATED = "user.glacier.created"
    NOTIFICATIONS = "user.glacier.notifications"
    ACCESS_POLICY = "user.glacier.access-policy"
    LOCK = "user.glacier.lock"  # `none`, `in-progress until DATE` or `locked`, then a line with the policy
    ARCHIVES = "user.glacier.archives"
    BYTES = "user.glacier.bytes"
    LAST_INVENTORY = "user.glacier.last-inventory"


# A vault's tag KEY is ``user.glacier.tag.KEY``.
TAG_PREFIX = "user.glacier.tag."
# What a vault directory carries from Glacier: with its tags, the first two can be set and removed.
VAULT_SETTINGS = (Attr.NOTIFICATIONS, Attr.ACCESS_POLICY, Attr.LOCK)
VAULT_FIGURES = (Attr.ARCHIVES, Attr.BYTES, Attr.LAST_INVENTORY, Attr.CREATED)


class State(StrEnum):
    """The first word of ``user.glacier.state``; what follows it is detail."""

    UPLOADING = UPLOADING  # the catalog's entry states, shown as they are
    QUEUED = QUEUED  # --write-back: in the spool, waiting for its upload
    EMPTY = EMPTY
    STORED = STORED  # in Glacier only
    RETRIEVING = "retrieving"  # `retrieving job=ID tier=TIER requested=DATE`
    CACHED = "cached"  # readable now, at no cost
    FAILED = "failed"  # `failed: why`; `glacierfs retrieve` starts a new job
    MISSING = MISSING


def state_of(value: str) -> State | None:
    """The state a ``user.glacier.state`` value starts with; None if unknown."""
    word = value.split(":", 1)[0].split(" ", 1)[0]
    return State(word) if word in State.__members__.values() else None


class Control:
    def __init__(
        self,
        vfs: GlacierFS,
        open_files: OpenFiles,
        outcomes: Outcomes,
        retriever: Retriever,
        inventories: Inventories,
        catalog: Catalog,
    ) -> None:
        self.vfs = vfs
        self.open_files = open_files
        self.outcomes = outcomes
        self.retriever = retriever
        self.inventories = inventories
        self.catalog = catalog

    def _file_attrs(self, entry: Entry) -> dict[Attr, str]:
        values = {Attr.STATE: self._state(entry)}
        if entry.archive_id:
            values[Attr.ARCHIVE_ID] = entry.archive_id
        if entry.tree_hash:
            values[Attr.TREE_HASH] = entry.tree_hash
        if entry.created:
            values[Attr.CREATED] = entry.created
        return values

    def _state(self, entry: Entry) -> str:
        if self.open_files.writing(entry.vault, entry.path):
            return State.UPLOADING
        if entry.state == QUEUED:  # queued, uploading, or failed: why
            return self.vfs.queue.state_of(entry.vault, entry.path) or entry.state
        if entry.state != STORED or not entry.archive_id:
            return entry.state
        if self.retriever.is_cached_archive(entry.archive_id):
            return State.CACHED
        job = self.retriever.last_whole_job(entry.archive_id)
        if job is not None and job.status in (IN_PROGRESS, SUCCEEDED):
            return f"{State.RETRIEVING} job={job.job_id} tier={job.tier} requested={timestamps.iso(job.requested)}"
        if job is not None and job.status == UNVERIFIED:
            return f"{State.FAILED}: {job.message}"
        return State.STORED

    def _vault_names(self, vault: str) -> list[str]:
        settings = self.vfs.settings
        names = [TAG_PREFIX + key for key in sorted(settings.tags(vault))]
        if settings.notifications(vault) is not None:
            names.append(Attr.NOTIFICATIONS)
        if settings.access_policy(vault) is not None:
            names.append(Attr.ACCESS_POLICY)
        names.append(Attr.LOCK)
        figures = self._vault_figures(vault)
        return names + [name for name in VAULT_FIGURES if figures.get(name) is not None]

    def _vault_figures(self, vault: str) -> dict[Attr, str | None]:
        described = self.vfs.settings.figures(vault)
        return {
            Attr.ARCHIVES: None if described.archive_count is None else str(described.archive_count),
            Attr.BYTES: None if described.size is None else str(described.size),
            Attr.LAST_INVENTORY: described.last_inventory,
            Attr.CREATED: described.created or None,
        }

    def _vault_value(self, vault: str, name: str) -> str | None:
        settings = self.vfs.settings
        if name.startswith(TAG_PREFIX):
            return settings.tags(vault).get(name.removeprefix(TAG_PREFIX))
        if name == Attr.NOTIFICATIONS:
            notifications = settings.notifications(vault)
            if notifications is None:
                return None
            return json.dumps({"SNSTopic": notifications.topic, "Events": list(notifications.events)})
        if name == Attr.ACCESS_POLICY:
            return settings.access_policy(vault)
        if name == Attr.LOCK:
            lock = settings.lock(vault)
            if lock is None:
                return "none"
            state = "locked" if lock.state == "Locked" else f"in-progress until {lock.expires}"
            return f"{state}\n{lock.policy}"
        return self._vault_figures(vault).get(Attr(name))

    @staticmethod
    def _is_vault_attr(name: str) -> bool:
        return name.startswith(TAG_PREFIX) or name in VAULT_SETTINGS or name in VAULT_FIGURES

    def names(self, path: str) -> list[str]:
        vault, rel = split(path)
        if vault is not None and not rel:
            self.vfs.vaults.require(vault)
            return [Attr.INVENTORY, *self._vault_names(vault)]
        if vault is None:
            return []
        entry = self.vfs.entry(vault, rel)
        return [] if entry.is_dir else list(self._file_attrs(entry))

    def get(self, path: str, name: str, read_by: str = "glacierfs") -> bytes:
        """``read_by``: who reads cached archives, for status (fs.py knows)."""
        vault, rel = split(path)
        if name not in Attr.__members__.values() and not name.startswith(TAG_PREFIX):
            raise errors.UnknownAttribute(name)
        if vault is None and name == Attr.STATUS:
            return json.dumps(self.status(read_by)).encode()
        if vault is None and name == Attr.QUEUE:
            return json.dumps(self.vfs.queue.status()).encode()
        if vault is None and name == Attr.SOURCE:
            glacier = self.vfs.glacier
            source = {"catalog": str(self.catalog.path), "endpoint": glacier.endpoint_url, "region": glacier.region}
            return json.dumps({**source, "profile": glacier.profile}).encode()
        if vault is not None and not rel and name == Attr.INVENTORY:
            self.vfs.vaults.require(vault)
            return self.inventories.describe(vault).encode()
        if vault is not None and not rel and self._is_vault_attr(name):
            self.vfs.vaults.require(vault)
            value = self._vault_value(vault, name)
            if value is None:
                raise errors.NoAttribute(f"vault {vault} has no {name}")
            return value.encode()
        if name.startswith(TAG_PREFIX):
            raise errors.UnknownAttribute(f"{name}: only vaults carry tags")
        value = None
        if vault is not None and rel:
            entry = self.vfs.entry(vault, rel)
            value = None if entry.is_dir else self._file_attrs(entry).get(Attr(name))
        else:
            self.vfs.stat(path)
        if value is None:
            raise errors.NoAttribute(f"{path} has no {name}")
        return value.encode()

    def set(self, path: str, name: str, value: bytes) -> None:
        """The commands: ``retrieve`` = TIER on a file thaws it; ``refresh`` on a
        vault asks for a new inventory. And a vault's own settings in Glacier."""
        vault, rel = split(path)
        if name == Attr.QUEUE and vault is None:
            if value.strip() != b"now":
                raise errors.InvalidRequest(f"{name}: set it to `now` to send every queued file at once")
            self.vfs.queue.hurry()
            return
        if name == Attr.REFRESH and vault is not None and not rel:
            self.vfs.vaults.require(vault)
            self.inventories.refresh(vault, force=True)
            return
        if vault is not None and not rel and self._is_vault_attr(name):
            self.vfs.vaults.require(vault)
            self._set_vault_attr(vault, name, _text(name, value))
            return
        if name != Attr.RETRIEVE:
            raise errors.UnknownAttribute(f"{name}: glacierfs keeps no extended attributes of its own choosing")
        vault, rel = self.vfs.file_path(path)
        entry = self.vfs.entry(vault, rel)
        if entry.is_dir or not entry.archive_id:
            return  # nothing in Glacier to retrieve
        tier = value.decode(errors="replace").strip() or self.retriever.tier
        self.retriever.request(self.retriever.target(entry), explicit=True, tier=tier)

    def _set_vault_attr(self, vault: str, name: str, text: str) -> None:
        settings = self.vfs.settings
        if name.startswith(TAG_PREFIX):
            key = name.removeprefix(TAG_PREFIX)
            if not key:
                raise errors.InvalidRequest(f"{name}: name the tag, as {TAG_PREFIX}KEY")
            settings.set_tag(vault, key, text)
        elif name == Attr.NOTIFICATIONS:
            settings.set_notifications(vault, text)
        elif name == Attr.ACCESS_POLICY:
            settings.set_access_policy(vault, text)
        else:
            raise errors.NotSupported(
                f"{name} of vault {vault} shows Glacier's own record and cannot be set"
                + (" here (a vault lock is made with the AWS CLI: it can never be undone)" if name == Attr.LOCK else "")
            )

    def remove(self, path: str, name: str) -> None:
        """removexattr: a vault's tags, notifications and access policy."""
        vault, rel = split(path)
        if vault is None or rel or not self._is_vault_attr(name):
            raise errors.UnknownAttribute(f"{name}: glacierfs keeps no extended attributes of its own choosing")
        self.vfs.vaults.require(vault)
        settings = self.vfs.settings
        if name.startswith(TAG_PREFIX):
            settings.remove_tag(vault, name.removeprefix(TAG_PREFIX))
        elif name == Attr.NOTIFICATIONS:
            settings.remove_notifications(vault)
        elif name == Attr.ACCESS_POLICY:
            settings.remove_access_policy(vault)
        else:
            raise errors.NotSupported(f"{name} of vault {vault} shows Glacier's own record and cannot be removed")

    def _account(self) -> dict[str, object]:
        """The account's limits Glacier applies to every retrieval, beside glacierfs's own guard.
        Not asked while Glacier is not answering: status would wait out the retries."""
        glacier = self.vfs.glacier.reachability.status()
        if not glacier["reachable"]:
            unknown = {"error": f"Glacier at {glacier['endpoint']} is not answering"}
            return {"retrieval_policy": unknown, "capacity": unknown}
        settings = self.vfs.settings
        result: dict[str, object] = {}
        try:
            policy = settings.retrieval_policy()
            result["retrieval_policy"] = {
                "strategy": policy.strategy,
                "bytes_per_hour": policy.bytes_per_hour,
                "summary": policy.summary,
            }
        except errors.GlacierFSError as error:
            result["retrieval_policy"] = {"error": str(error)}
        try:
            result["capacity"] = {
                "units": [
                    {"capacity_id": unit.capacity_id, "start": unit.start, "expires": unit.expires}
                    for unit in settings.capacity()
                ]
            }
        except errors.GlacierFSError as error:
            result["capacity"] = {"error": str(error)}
        return result

    def status(self, read_by: str = "glacierfs") -> dict[str, object]:
        """What `glacierfs status` shows: uploads, jobs in flight, cache, budget,
        and the account's retrieval policy and provisioned capacity (two Glacier calls)."""
        result: dict[str, object] = {
            "uploads": [
                {"path": f"{h.vault}/{h.path}", "bytes": h.size, "parts_sent": h.writer.parts_done}
                for h in self.open_files.uploads()
            ],
            "part_size": self.vfs.options.part_size,
            "queue": self.vfs.queue.status(),
            "held_back": self.outcomes.pending,
            "glacier": self.vfs.glacier.reachability.status(),
            "gone_vaults": [
                {"name": name, "since": since, "entries": kept} for name, since, kept in self.catalog.gone_vaults()
            ],
            **self.retriever.status(),
            **self._account(),
        }
        cache = result["cache"]
        assert isinstance(cache, dict)
        cache["read_by"] = read_by
        return result


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as error:
        raise errors.InvalidRequest(f"{name}: the value is not UTF-8 text ({error})") from error
