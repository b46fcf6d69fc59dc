"""What this account spent on retrievals lately, counted once whoever spent it.

The mount's cost guard (``--max-retrieval-bytes``/``--max-retrieval-jobs``)
and `glacierfs export`'s pacer (``--max-bytes-per-day``/``--max-jobs-per-hour``)
both count here, so neither can spend the other's allowance unseen. The jobs
the mount started are in its catalog; the jobs exports started are in their
state file beside it (exportstate.py; its path is here, so that this
module imports nothing of the export's), which the mount reads read-only, as the
export reads the catalog. A job in both counts once: an export reuses a job of
the mount's without recording it as its own, and a mount may adopt a job an
export started when Glacier lists it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Started = tuple[str, float, int]  # job id, when it was requested, bytes it retrieves


def state_path(catalog: Path) -> Path:
    """Where the exports of the mount whose catalog is ``catalog`` keep their
    state (exportstate.py): beside the catalog, so the mount finds their jobs."""
    key = catalog.name.removeprefix("catalog-").removesuffix(".sqlite")
    return catalog.with_name(f"export-{key}.sqlite")


def read_exports(catalog: Path, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
    """Rows of the export state beside ``catalog``, read-only and without its
    lock; none if there is no state yet, or it is being created right now."""
    path = state_path(catalog)
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # being created by an export, or from before a table was added
        return []


def exports_started(catalog: Path, since: float) -> list[Started]:
    """The jobs exports of the mount whose catalog is ``catalog`` started since ``since``."""
    rows = read_exports(catalog, "SELECT job_id, requested, bytes FROM export_jobs WHERE requested>=?", (since,))
    return [(row[0], row[1], row[2]) for row in rows]


def spent(*sources: Iterable[Started]) -> list[tuple[float, int]]:
    """(when, bytes) of every job in ``sources``, each job once, oldest first."""
    seen: dict[str, tuple[float, int]] = {}
    for source in sources:
        for job_id, requested, size in source:
            seen.setdefault(job_id, (requested, size))
    return sorted(seen.values())
