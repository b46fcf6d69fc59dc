"""What retrievals cost, for the estimate `glacierfs export` shows before it
starts. The one price table; prices change, so it carries its date, and
``--prices FILE`` (JSON of the same shape) overrides it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glacierfs import errors

# Amazon S3 Glacier (vault API) retrieval prices for us-east-1, USD, as published
# on the Glacier pricing page; check it for your region before trusting an estimate.
PRICES_DATE = "2025-01"
PRICES: dict[str, dict[str, float]] = {
    "Expedited": {"per_gb": 0.03, "per_1000_requests": 10.0},
    "Standard": {"per_gb": 0.01, "per_1000_requests": 0.05},
    "Bulk": {"per_gb": 0.0025, "per_1000_requests": 0.025},
}
GB = 1 << 30


@dataclass(frozen=True)
class PriceTable:
    date: str
    tiers: dict[str, dict[str, float]]

    def estimate(self, tier: str, jobs: int, size: int) -> float:
        price = self.tiers[tier]
        return size / GB * price["per_gb"] + jobs / 1000 * price["per_1000_requests"]


def price_table(override: Path | None = None) -> PriceTable:
    """The built-in table, or one read from ``override``:
    ``{"date": "...", "tiers": {"Bulk": {"per_gb": ..., "per_1000_requests": ...}, ...}}``."""
    if override is None:
        return PriceTable(PRICES_DATE, PRICES)
    try:
        loaded = json.loads(override.read_text())
        tiers = {
            tier: {"per_gb": float(values["per_gb"]), "per_1000_requests": float(values["per_1000_requests"])}
            for tier, values in loaded["tiers"].items()
        }
        return PriceTable(str(loaded.get("date", str(override))), {**PRICES, **tiers})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise errors.InvalidRequest(f"cannot read prices from {override}: {error}") from error
