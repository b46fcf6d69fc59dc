"""Provisioned capacity: purchase and list units, and the Expedited retrievals they admit.

An account holds at most two active units in a region; each lasts a month (to
the midnight after, as the service's dates show) and guarantees three Expedited
retrievals every five minutes. Whether Expedited jobs find capacity without a
unit is the emulator's ``expedited_capacity`` knob: ``on-demand`` (always) or
``none`` (only within what active units guarantee).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Any

from .knobs import now, settings
from .rules import GlacierError, iso, limit_exceeded, new_id
from .vaults import VaultsBackend

MAX_UNITS = 2
RETRIEVALS_PER_UNIT = 3
UNIT_WINDOW = 5 * 60


def insufficient_capacity(message: str) -> GlacierError:
    return GlacierError(503, "InsufficientCapacityException", message)


def unit_expiry(start: float) -> float:
    """A month after ``start``, at the following midnight UTC (the same day of the month, or the month's last)."""
    moment = datetime.fromtimestamp(start, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    later = moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))
    midnight = later.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return midnight.timestamp()


class CapacityBackend(VaultsBackend):
    """The account's provisioned capacity units in this region."""

    def _active_units(self) -> list[Any]:
        return self.store.query(
            "SELECT * FROM capacity_units WHERE account=? AND region=? AND expires>? ORDER BY starts, id",
            (self.account_id, self.region_name, now()),
        )

    def purchase_capacity(self) -> str:
        with self.store.transaction() as db:
            (active,) = db.execute(
                "SELECT COUNT(*) FROM capacity_units WHERE account=? AND region=? AND expires>?",
                (self.account_id, self.region_name, now()),
            ).fetchone()
            if active >= MAX_UNITS:
                raise limit_exceeded(f"The account already holds {MAX_UNITS} provisioned capacity units")
            unit_id, start = new_id(18), now()
            db.execute(
                "INSERT INTO capacity_units (id, account, region, starts, expires) VALUES (?,?,?,?,?)",
                (unit_id, self.account_id, self.region_name, start, unit_expiry(start)),
            )
        return unit_id

    def list_capacity(self) -> list[dict[str, Any]]:
        return [
            {"CapacityId": row["id"], "StartDate": iso(row["starts"]), "ExpirationDate": iso(row["expires"])}
            for row in self._active_units()
        ]

    def check_expedited_capacity(self, tier: str) -> None:
        """Refuse an Expedited job the service would have no capacity for."""
        if tier != "Expedited" or settings.expedited_capacity != "none":
            return
        units = len(self._active_units())
        (recent,) = self.store.query_one(
            "SELECT COUNT(*) FROM jobs j JOIN vaults v ON v.id=j.vault_id "
            "WHERE v.account=? AND v.region=? AND j.tier='Expedited' AND j.created>?",
            (self.account_id, self.region_name, now() - UNIT_WINDOW),
        )
        if recent >= RETRIEVALS_PER_UNIT * units:
            raise insufficient_capacity(
                "There is not enough capacity to process this Expedited request"
                + (
                    f": {units} provisioned capacity unit(s) guarantee {RETRIEVALS_PER_UNIT * units} "
                    f"Expedited retrievals per {UNIT_WINDOW // 60} minutes, and {recent} were made"
                    if units
                    else " (no provisioned capacity unit is active)"
                )
            )
