"""The documents a vault carries: its notification configuration and its access policy.

The service checks them when they are set, keeps them as given, and returns them
as they were set; getting one that was never set (or was deleted) is a 404, and
deleting one that is not there is no error. The emulator stores them and does
not act on them: it sends no SNS messages and has one principal only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .rules import invalid, missing, not_found
from .vaults import VaultsBackend

NOTIFICATIONS = "notifications"
ACCESS_POLICY = "access-policy"
EVENTS = ("ArchiveRetrievalCompleted", "InventoryRetrievalCompleted")
MAX_POLICY = 20 * 1024
SNS_TOPIC = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]*:\d*:[A-Za-z0-9_.-]{1,256}")


def check_sns_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not SNS_TOPIC.fullmatch(topic):
        raise invalid(f"Invalid SNSTopic: {topic!r} is not an SNS topic ARN")
    return topic


def check_policy(policy: Any, what: str) -> str:
    """An IAM-style policy document: a JSON object of at most 20 KB, kept as the text given."""
    if policy is None:
        raise missing(f"Missing required parameter: Policy ({what})")
    if not isinstance(policy, str) or len(policy.encode()) > MAX_POLICY:
        raise invalid(f"Invalid {what}: a JSON document of at most {MAX_POLICY} bytes")
    try:
        document = json.loads(policy)
    except ValueError as error:
        raise invalid(f"Invalid {what}: not JSON ({error})") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise invalid(f"Invalid {what}: a policy is a JSON object with a Statement")
    return policy


class VaultDocumentsBackend(VaultsBackend):
    """Notification configuration and access policy, per vault."""

    def _get_document(self, vault_name: str, kind: str, absent: str) -> str:
        vault = self.vault(vault_name)
        row = self.store.query_one("SELECT body FROM vault_documents WHERE vault_id=? AND kind=?", (vault.id, kind))
        if row is None:
            raise not_found(f"No {absent} is set for the vault: {self.arn(vault_name)}")
        return str(row["body"])

    def _set_document(self, vault_name: str, kind: str, body: str) -> None:
        vault = self.vault(vault_name)
        self.store.execute(
            "INSERT OR REPLACE INTO vault_documents (vault_id, kind, body) VALUES (?,?,?)", (vault.id, kind, body)
        )

    def _delete_document(self, vault_name: str, kind: str) -> None:
        vault = self.vault(vault_name)
        self.store.execute("DELETE FROM vault_documents WHERE vault_id=? AND kind=?", (vault.id, kind))

    # Notifications ----------------------------------------------------------

    def set_notifications(self, vault_name: str, config: dict[str, Any]) -> None:
        if config.get("SNSTopic") is None:
            raise missing("Missing required parameter: SNSTopic")
        topic = check_sns_topic(config["SNSTopic"])
        events = config.get("Events")
        if events is None:
            raise missing("Missing required parameter: Events")
        if not isinstance(events, list) or not events or any(event not in EVENTS for event in events):
            raise invalid(f"Invalid Events: {events!r} (one or more of {', '.join(EVENTS)})")
        self._set_document(vault_name, NOTIFICATIONS, json.dumps({"SNSTopic": topic, "Events": events}))

    def get_notifications(self, vault_name: str) -> dict[str, Any]:
        return dict(json.loads(self._get_document(vault_name, NOTIFICATIONS, "notification configuration")))

    def delete_notifications(self, vault_name: str) -> None:
        self._delete_document(vault_name, NOTIFICATIONS)

    # Access policy ----------------------------------------------------------

    def set_access_policy(self, vault_name: str, policy: Any) -> None:
        self._set_document(vault_name, ACCESS_POLICY, check_policy(policy, "access policy"))

    def get_access_policy(self, vault_name: str) -> str:
        return self._get_document(vault_name, ACCESS_POLICY, "access policy")

    def delete_access_policy(self, vault_name: str) -> None:
        self._delete_document(vault_name, ACCESS_POLICY)
