"""A vault's own settings in Glacier (tags, notifications, access policy, lock,
the figures of its last inventory) and the account's retrieval limits, as the
control surface shows and changes them.

Each read is a Glacier call, so values are kept for a moment: `getfattr -d`
lists a vault's names and then reads each value, and would otherwise ask
Glacier twice for each. A change made through the mount drops the vault's kept
values once Glacier has taken it, and a read that was under way meanwhile is
not kept, so the mount never shows a value older than its own last change.
Changes made by other clients show after at most ``ttl`` seconds.

Lock order: ``self._lock`` is a leaf, and no Glacier call is made under it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from glacierfs import errors, timestamps
from glacierfs.glacier import GlacierClient
from glacierfs.records import CapacityUnit, RetrievalPolicy, Vault, VaultLock, VaultNotifications

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY = 24 * 3600
TTL = 2.0  # long enough for one `getfattr -d`, short enough to follow other clients
NOTIFICATION_EVENTS = ("ArchiveRetrievalCompleted", "InventoryRetrievalCompleted")


@dataclass(frozen=True)
class Retention:
    """What a vault lock policy keeps: archives younger than ``days`` (or as old,
    when ``inclusive``), from glacier:DeleteArchive."""

    days: int
    inclusive: bool

    def keeps(self, age_days: float) -> bool:
        whole = int(age_days)  # the service counts whole days
        return whole <= self.days if self.inclusive else whole < self.days


def retention_of(policy: str) -> Retention | None:
    """The usual lock policy's rule: a Deny of glacier:DeleteArchive while
    glacier:ArchiveAgeInDays is below N. None for any other policy."""
    try:
        document = json.loads(policy)
    except ValueError:
        return None
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(action in ("glacier:DeleteArchive", "glacier:*", "*") for action in actions):
            continue
        conditions = statement.get("Condition")
        if not isinstance(conditions, dict):
            continue
        for operator, inclusive in (("NumericLessThan", False), ("NumericLessThanEquals", True)):
            condition = conditions.get(operator)
            value = condition.get("glacier:ArchiveAgeInDays") if isinstance(condition, dict) else None
            try:
                return Retention(int(str(value)), inclusive)
            except ValueError:
                continue
    return None


def parse_notifications(text: str) -> VaultNotifications:
    """``{"SNSTopic": ARN, "Events": [...]}``, Glacier's own form; InvalidRequest says what is wrong."""
    document = _json_object(text, "notifications")
    topic, events = document.get("SNSTopic"), document.get("Events")
    if not isinstance(topic, str) or not topic:
        raise errors.InvalidRequest('notifications need "SNSTopic", an SNS topic ARN')
    if not isinstance(events, list) or not events or not all(isinstance(event, str) for event in events):
        raise errors.InvalidRequest(f'notifications need "Events", a list of {" and ".join(NOTIFICATION_EVENTS)}')
    unknown = set(document) - {"SNSTopic", "Events"}
    if unknown:
        raise errors.InvalidRequest(f"notifications hold SNSTopic and Events only, not {', '.join(sorted(unknown))}")
    return VaultNotifications(topic, tuple(events))


def check_policy(text: str) -> str:
    """An access policy is a JSON object; Glacier checks the rest."""
    _json_object(text, "an access policy")
    return text


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise errors.InvalidRequest(f"{what}: not JSON ({error})") from error
    if not isinstance(document, dict):
        raise errors.InvalidRequest(f"{what}: a JSON object, not {type(document).__name__}")
    return document


class VaultSettings:
    def __init__(self, glacier: GlacierClient, ttl: float = TTL) -> None:
        self.glacier = glacier
        self.ttl = ttl
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[float, object]] = {}
        self._changes: defaultdict[str, int] = defaultdict(int)  # per vault, so a read begun before one is not kept

    def _read(self, vault: str, item: str, fetch: Callable[[], T]) -> T:
        with self._lock:
            kept = self._kept.get((vault, item))
            if kept is not None and time.monotonic() - kept[0] < self.ttl:
                return cast(T, kept[1])
            changes = self._changes[vault]
        value = fetch()
        with self._lock:
            if self._changes[vault] == changes:
                self._kept[(vault, item)] = (time.monotonic(), value)
        return value

    def _change(self, vault: str, change: Callable[[], None]) -> None:
        try:
            change()
        finally:  # even a failed change may have reached Glacier: read anew
            with self._lock:
                self._changes[vault] += 1
                for key in [key for key in self._kept if key[0] == vault]:
                    del self._kept[key]

    # Reading ----------------------------------------------------------------

    def tags(self, vault: str) -> dict[str, str]:
        return self._read(vault, "tags", lambda: self.glacier.list_vault_tags(vault))

    def notifications(self, vault: str) -> VaultNotifications | None:
        return self._read(vault, "notifications", lambda: self.glacier.get_vault_notifications(vault))

    def access_policy(self, vault: str) -> str | None:
        return self._read(vault, "access-policy", lambda: self.glacier.get_vault_access_policy(vault))

    def lock(self, vault: str) -> VaultLock | None:
        return self._read(vault, "lock", lambda: self.glacier.get_vault_lock(vault))

    def figures(self, vault: str) -> Vault:
        """DescribeVault: its archive count and size as of its last inventory."""
        return self._read(vault, "figures", lambda: self.glacier.describe_vault(vault))

    def retrieval_policy(self) -> RetrievalPolicy:
        return self.glacier.get_data_retrieval_policy()

    def capacity(self) -> list[CapacityUnit]:
        return self.glacier.list_provisioned_capacity()

    # Changing ---------------------------------------------------------------

    def set_tag(self, vault: str, key: str, value: str) -> None:
        def add() -> None:
            try:
                self.glacier.add_vault_tags(vault, {key: value})
            except errors.LimitExceeded as error:
                raise errors.TooManyTags(
                    f"vault {vault} holds the 50 tags Glacier allows; remove one before adding {key!r} ({error})"
                ) from error
            except errors.InvalidRequest as error:
                raise errors.InvalidRequest(f"Glacier refused tag {key!r} of vault {vault}: {error}") from error

        self._change(vault, add)
        log.info("vault %s: tag %s set", vault, key)

    def remove_tag(self, vault: str, key: str) -> None:
        if key not in self.tags(vault):
            raise errors.NoAttribute(f"vault {vault} has no tag {key!r}")
        self._change(vault, lambda: self.glacier.remove_vault_tags(vault, [key]))
        log.info("vault %s: tag %s removed", vault, key)

    def set_notifications(self, vault: str, text: str) -> None:
        try:
            notifications = parse_notifications(text)
        except errors.InvalidRequest as error:
            raise errors.InvalidRequest(f"notifications of vault {vault} not set: {error}") from error
        self._change(vault, lambda: self.glacier.set_vault_notifications(vault, notifications))
        log.info("vault %s: notifications go to %s for %s", vault, notifications.topic, ", ".join(notifications.events))

    def remove_notifications(self, vault: str) -> None:
        if self.notifications(vault) is None:
            raise errors.NoAttribute(f"vault {vault} has no notifications")
        self._change(vault, lambda: self.glacier.delete_vault_notifications(vault))
        log.info("vault %s: notifications removed", vault)

    def set_access_policy(self, vault: str, text: str) -> None:
        try:
            check_policy(text)
        except errors.InvalidRequest as error:
            raise errors.InvalidRequest(f"access policy of vault {vault} not set: {error}") from error
        self._change(vault, lambda: self.glacier.set_vault_access_policy(vault, text))
        log.info("vault %s: access policy set", vault)

    def remove_access_policy(self, vault: str) -> None:
        if self.access_policy(vault) is None:
            raise errors.NoAttribute(f"vault {vault} has no access policy")
        self._change(vault, lambda: self.glacier.delete_vault_access_policy(vault))
        log.info("vault %s: access policy removed", vault)

    # Explaining -------------------------------------------------------------

    def refused_deletion(
        self, label: str, vault: str, archive_id: str, created: str | None, error: errors.AccessDenied
    ) -> errors.AccessDenied:
        """Why Glacier refused to delete an archive, for the log: the vault lock
        and the archive's age (from ``created``, the catalog's date: the
        service's message names neither)."""
        try:
            lock = self.lock(vault)
        except errors.GlacierFSError as lookup:
            log.debug("vault lock of %s unknown: %s", vault, lookup)
            lock = None
        if lock is None:
            return errors.AccessDenied(f"{label}: Glacier refused to delete archive {archive_id[:16]} ({error})")
        state = "locked" if lock.state == "Locked" else f"in progress until {lock.expires}"
        stored = timestamps.parse_iso(created or "")
        if stored is None:
            age = "of unknown age (the catalog has no date for it)"
        else:
            age = f"{int((time.time() - stored) // DAY)} days old (stored {created})"
        retention = retention_of(lock.policy)
        if retention is None:
            rule = f"its policy denies the deletion: {lock.policy}"
        else:
            bound = "up to" if retention.inclusive else "younger than"
            rule = f"its policy keeps archives {bound} {retention.days} days"
            if stored is not None:
                free = stored + (retention.days + (1 if retention.inclusive else 0)) * DAY
                rule += f", so this one until {timestamps.iso(free)}"
        return errors.ArchiveLocked(
            f"{label}: the vault lock of {vault} ({state}) protects archive {archive_id[:16]}, which is {age}; "
            f"{rule}. Glacier refused to delete it, and the file stays ({error})"
        )
