"""HTTP face of a vault's and an account's configuration.

Tags, notification configuration, access policy and vault lock of a vault; the
data retrieval policy and provisioned capacity of an account in a region. The
rules are in the backend layers; here is only the wire format of each call, as
the Glacier API reference gives it.
"""

from __future__ import annotations

from moto.core.common_types import TYPE_RESPONSE

from .http import EmulatorHTTP


class ConfigResponses(EmulatorHTTP):
    # Tags -------------------------------------------------------------------

    def add_tags_to_vault(self) -> TYPE_RESPONSE:
        self.glacier_backend.add_tags(self._vault_name, self._body("tags request").get("Tags"))
        return self._empty(204)

    def list_tags_for_vault(self) -> TYPE_RESPONSE:
        return self._json(200, {"Tags": self.glacier_backend.list_tags(self._vault_name)})

    def remove_tags_from_vault(self) -> TYPE_RESPONSE:
        self.glacier_backend.remove_tags(self._vault_name, self._body("tags request").get("TagKeys"))
        return self._empty(204)

    # Notifications ------------------------------------------------------------

    def set_vault_notifications(self) -> TYPE_RESPONSE:
        self.glacier_backend.set_notifications(self._vault_name, self._body("notification configuration"))
        return self._empty(204)

    def get_vault_notifications(self) -> TYPE_RESPONSE:
        return self._json(200, self.glacier_backend.get_notifications(self._vault_name))

    def delete_vault_notifications(self) -> TYPE_RESPONSE:
        self.glacier_backend.delete_notifications(self._vault_name)
        return self._empty(204)

    # Access policy ------------------------------------------------------------

    def set_vault_access_policy(self) -> TYPE_RESPONSE:
        self.glacier_backend.set_access_policy(self._vault_name, self._body("access policy").get("Policy"))
        return self._empty(204)

    def get_vault_access_policy(self) -> TYPE_RESPONSE:
        return self._json(200, {"Policy": self.glacier_backend.get_access_policy(self._vault_name)})

    def delete_vault_access_policy(self) -> TYPE_RESPONSE:
        self.glacier_backend.delete_access_policy(self._vault_name)
        return self._empty(204)

    # Vault lock ---------------------------------------------------------------

    def initiate_vault_lock(self) -> TYPE_RESPONSE:
        lock_id = self.glacier_backend.initiate_vault_lock(self._vault_name, self._body("lock policy").get("Policy"))
        return self._empty(201, {"x-amz-lock-id": lock_id})

    def complete_vault_lock(self) -> TYPE_RESPONSE:
        self.glacier_backend.complete_vault_lock(self._vault_name, self._item_id())
        return self._empty(204)

    def abort_vault_lock(self) -> TYPE_RESPONSE:
        self.glacier_backend.abort_vault_lock(self._vault_name)
        return self._empty(204)

    def get_vault_lock(self) -> TYPE_RESPONSE:
        return self._json(200, self.glacier_backend.get_vault_lock(self._vault_name))

    # Data retrieval policy ----------------------------------------------------

    def get_data_retrieval_policy(self) -> TYPE_RESPONSE:
        return self._json(200, {"Policy": self.glacier_backend.get_retrieval_policy()})

    def set_data_retrieval_policy(self) -> TYPE_RESPONSE:
        self.glacier_backend.set_retrieval_policy(self._body("data retrieval policy").get("Policy"))
        return self._empty(204)

    # Provisioned capacity -----------------------------------------------------

    def purchase_provisioned_capacity(self) -> TYPE_RESPONSE:
        capacity_id = self.glacier_backend.purchase_capacity()
        return self._empty(201, {"x-amz-capacity-id": capacity_id})

    def list_provisioned_capacity(self) -> TYPE_RESPONSE:
        return self._json(200, {"ProvisionedCapacityList": self.glacier_backend.list_capacity()})
