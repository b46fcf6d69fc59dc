"""The control surface: glacierfs's extended attributes, and the status they
carry. The names and the states are defined here and nowhere else; the
`status`, `retrieve` and `refresh` commands (client.py) are this module's
client, and read them through ``Attr`` and ``state_of``.

- the mount's root: ``user.glacier.status``, JSON of uploads, jobs, cache, budget;
- a vault: ``user.glacier.inventory`` (pending job, or the inventory's date),
  and setting ``user.glacier.refresh`` asks for a new inventory;
- a file: ``state``, ``archive-id``, ``tree-hash``, ``created``, and setting
  ``user.glacier.retrieve`` to a tier thaws it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

from glacierfs import errors, timestamps
from glacierfs.catalog import EMPTY, IN_PROGRESS, STORED, SUCCEEDED, UNVERIFIED, UPLOADING
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
    INVENTORY = "user.glacier.inventory"
    REFRESH = "user.glacier.refresh"
    RETRIEVE = "user.glacier.retrieve"
    STATE = "user.glacier.state"
    ARCHIVE_ID = "user.glacier.archive-id"
    TREE_HASH = "user.glacier.tree-hash"
    CREATED = "user.glacier.created"


class State(StrEnum):
    """The first word of ``user.glacier.state``; what follows it is detail."""

    UPLOADING = UPLOADING  # the catalog's entry states, shown as they are
    EMPTY = EMPTY
    STORED = STORED  # in Glacier only
    RETRIEVING = "retrieving"  # `retrieving job=ID tier=TIER requested=DATE`
    CACHED = "cached"  # readable now, at no cost
    FAILED = "failed"  # `failed: why`; `glacierfs retrieve` starts a new job
    MISSING = "missing"  # a later inventory does not list it


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

    def names(self, path: str) -> list[str]:
        vault, rel = split(path)
        if vault is not None and not rel:
            self.vfs.vaults.require(vault)
            return [Attr.INVENTORY]
        if vault is None:
            return []
        entry = self.vfs.entry(vault, rel)
        return [] if entry.is_dir else list(self._file_attrs(entry))

    def get(self, path: str, name: str, read_by: str = "glacierfs") -> bytes:
        """``read_by``: who reads cached archives, for status (fs.py knows)."""
        vault, rel = split(path)
        if name not in Attr.__members__.values():
            raise errors.UnknownAttribute(name)
        if vault is None and name == Attr.STATUS:
            return json.dumps(self.status(read_by)).encode()
        if vault is None and name == Attr.SOURCE:
            glacier = self.vfs.glacier
            source = {"catalog": str(self.catalog.path), "endpoint": glacier.endpoint_url, "region": glacier.region}
            return json.dumps({**source, "profile": glacier.profile}).encode()
        if vault is not None and not rel and name == Attr.INVENTORY:
            self.vfs.vaults.require(vault)
            return self.inventories.describe(vault).encode()
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
        """Only the commands: ``retrieve`` = TIER on a file thaws it; ``refresh``
        on a vault asks for a new inventory."""
        vault, rel = split(path)
        if name == Attr.REFRESH and vault is not None and not rel:
            self.vfs.vaults.require(vault)
            self.inventories.refresh(vault, force=True)
            return
        if name != Attr.RETRIEVE:
            raise errors.UnknownAttribute(f"{name}: glacierfs keeps no extended attributes of its own choosing")
        vault, rel = self.vfs.file_path(path)
        entry = self.vfs.entry(vault, rel)
        if entry.is_dir or not entry.archive_id:
            return  # nothing in Glacier to retrieve
        tier = value.decode(errors="replace").strip() or self.retriever.tier
        self.retriever.request(self.retriever.target(entry), explicit=True, tier=tier)

    def status(self, read_by: str = "glacierfs") -> dict[str, object]:
        """What `glacierfs status` shows: uploads, jobs in flight, cache, budget."""
        result: dict[str, object] = {
            "uploads": [
                {"path": f"{h.vault}/{h.path}", "bytes": h.size, "parts_sent": h.writer.uploader.parts_done}
                for h in self.open_files.uploads()
            ],
            "part_size": self.vfs.options.part_size,
            "held_back": self.outcomes.pending,
            "glacier": self.vfs.glacier.reachability.status(),
            "gone_vaults": [
                {"name": name, "since": since, "entries": kept} for name, since, kept in self.catalog.gone_vaults()
            ],
            **self.retriever.status(),
        }
        cache = result["cache"]
        assert isinstance(cache, dict)
        cache["read_by"] = read_by
        return result
