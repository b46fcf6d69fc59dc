"""The data retrieval policy: one per account and region, and the InitiateJob it refuses.

``None`` (the default) lets every retrieval through. ``BytesPerHour`` refuses a
job that would take the bytes requested within the last hour (rolling) above
the rate; ``FreeTier`` refuses one that would take the last 24 hours above the
free tier's daily share (``settings.free_tier_bytes_per_day``). As the service
documents, the policy governs Standard archive retrievals only.
"""

from __future__ import annotations

from typing import Any

from .knobs import now, settings
from .rules import GlacierError, invalid, missing
from .vaults import VaultsBackend

STRATEGIES = ("None", "FreeTier", "BytesPerHour")
HOUR = 3600
DAY = 24 * HOUR


def policy_enforced(message: str) -> GlacierError:
    return GlacierError(
        400, "PolicyEnforcedException", f"InitiateJob request denied by current data retrieval policy. {message}"
    )


class RetrievalPolicyBackend(VaultsBackend):
    """The account's data retrieval policy in this region."""

    def _policy(self) -> tuple[str, int | None]:
        row = self.store.query_one(
            "SELECT strategy, bytes_per_hour FROM retrieval_policies WHERE account=? AND region=?",
            (self.account_id, self.region_name),
        )
        return (row["strategy"], row["bytes_per_hour"]) if row else ("None", None)

    def get_retrieval_policy(self) -> dict[str, Any]:
        strategy, rate = self._policy()
        rule: dict[str, Any] = {"Strategy": strategy}
        if strategy == "BytesPerHour":
            rule["BytesPerHour"] = rate
        return {"Rules": [rule]}

    def set_retrieval_policy(self, policy: Any) -> None:
        if policy is None:
            raise missing("Missing required parameter: Policy")
        rules = policy.get("Rules") if isinstance(policy, dict) else None
        if not isinstance(rules, list) or len(rules) != 1 or not isinstance(rules[0], dict):
            raise invalid("Invalid data retrieval policy: Rules must hold exactly one rule")
        strategy, rate = rules[0].get("Strategy"), rules[0].get("BytesPerHour")
        if strategy not in STRATEGIES:
            raise invalid(f"Invalid Strategy: {strategy!r} (one of {', '.join(STRATEGIES)})")
        if strategy == "BytesPerHour":
            if rate is None:
                raise missing("Missing required parameter: BytesPerHour (Strategy is BytesPerHour)")
            if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
                raise invalid(f"Invalid BytesPerHour: {rate!r} (a whole number of at least 1)")
        elif rate is not None:
            raise invalid(
                f"Invalid data retrieval policy: BytesPerHour is only for the BytesPerHour strategy, not {strategy}"
            )
        self.store.execute(
            "INSERT OR REPLACE INTO retrieval_policies (account, region, strategy, bytes_per_hour) VALUES (?,?,?,?)",
            (self.account_id, self.region_name, strategy, rate),
        )

    def _requested_since(self, since: float) -> int:
        """Bytes of Standard archive retrievals the account started in this region after ``since``."""
        (total,) = self.store.query_one(
            "SELECT COALESCE(SUM(COALESCE(j.range_end - j.range_start + 1, a.size)), 0) "
            "FROM jobs j JOIN vaults v ON v.id=j.vault_id JOIN archives a ON a.id=j.archive_id "
            "WHERE v.account=? AND v.region=? AND j.action='ArchiveRetrieval' AND j.tier='Standard' AND j.created>?",
            (self.account_id, self.region_name, since),
        )
        return int(total)

    def check_retrieval_policy(self, tier: str, size: int) -> None:
        """Refuse a retrieval of ``size`` bytes at ``tier`` if the policy forbids it."""
        strategy, rate = self._policy()
        if tier != "Standard" or strategy == "None":
            return
        if strategy == "BytesPerHour":
            assert rate is not None
            recent = self._requested_since(now() - HOUR)
            if recent + size > rate:
                raise policy_enforced(
                    f"{size} bytes on top of {recent} requested in the last hour exceed BytesPerHour {rate}"
                )
        else:
            recent = self._requested_since(now() - DAY)
            if recent + size > settings.free_tier_bytes_per_day:
                raise policy_enforced(
                    f"{size} bytes on top of {recent} requested in the last 24 hours exceed the free tier's "
                    f"{settings.free_tier_bytes_per_day} bytes a day"
                )
