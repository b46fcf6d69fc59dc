"""What retrievals cost, for the estimate `glacierfs export` shows before it
starts. The one price table; prices change, so it carries its date, and
``--prices FILE`` (JSON of the same shape) overrides it.

Checked on 2026-11-21 against what could be found of AWS's own pages (the
Glacier pricing page itself was not reachable from here):

- Standard, $0.01 per GB and $0.05 per 1,000 requests; Expedited, $10.00 per
  1,000 requests: AWS re:Post, "How do I manage data retrieval costs for S3
  Glacier..." (https://repost.aws/knowledge-center/s3-manage-data-retrieval),
  worked examples for 15,000,000 objects and 102,400 GB;
- Expedited, $0.03 per GB (with 1 cent a request): the 2016 retrieval price
  change as reported at https://www.theinfolist.com/html/ALL/s/A/Amazon_Glacier.html;
- Bulk, $0.0025 per GB and $0.025 per 1,000 requests: a 2023 price summary,
  https://gist.github.com/casouri/56e1e634e50d1ae023f3bb8ea4d053de.

These agree with the table written before (dated 2025-01), so no figure
changed. Amazon's S3 user guide ("Archive retrieval options") now says Bulk
retrievals are free for objects in the S3 Glacier Flexible Retrieval storage
class; that is S3's storage class, not the vault API this exports from, so
the vault's Bulk price stays. Prices are us-east-1's; other regions differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glacierfs import errors

# Amazon Glacier (vault API) retrieval prices for us-east-1, USD, as of PRICES_DATE
# (see above for where); check your region's before trusting an estimate.
PRICES_DATE = "2026-11"
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
