"""Re-encrypt every secret at rest with a new primary key, in one transaction (data.md §4.4).

The store names its queries; rotation needs a few that nothing else uses, so they are
registered here (:func:`register`, before the store is built) instead of in the shared SQL
files. The statements are plain SQL valid on both backends.
"""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.errors import KeyRingError, MailProxyError
from mail_proxy.manager.core import Core

PAGE = 500
QUERIES = {
    "rotation_tenants": "SELECT id, client_auth, signing_secret, large_file_config FROM tenants"
                        " ORDER BY id",
    "rotation_tenant_write": "UPDATE tenants SET client_auth = :client_auth, signing_secret = "
                             ":signing_secret, large_file_config = :large_file_config "
                             "WHERE id = :id",
    "rotation_accounts": "SELECT tenant_id, id, password, imap_password FROM accounts "
                         "ORDER BY tenant_id, id",
    "rotation_account_write": "UPDATE accounts SET password = :password, imap_password = "
                              ":imap_password WHERE tenant_id = :tenant_id AND id = :id",
    "rotation_instance": "SELECT bounce_imap_password, instance_secret FROM instance",
    "rotation_instance_write": "UPDATE instance SET bounce_imap_password = "
                               ":bounce_imap_password, instance_secret = :instance_secret",
    "rotation_storages": "SELECT pk, config FROM storages WHERE config IS NOT NULL ORDER BY pk",
    "rotation_storage_write": "UPDATE storages SET config = :config WHERE pk = :pk",
    "rotation_large_files": "SELECT id, storage_options FROM large_files "
                            "WHERE storage_options IS NOT NULL ORDER BY id",
    "rotation_large_file_write": "UPDATE large_files SET storage_options = :storage_options "
                                 "WHERE id = :id",
    "rotation_messages": "SELECT pk, payload FROM messages WHERE has_secrets AND pk > :after "
                         "ORDER BY pk LIMIT :limit",
    "rotation_message_write": "UPDATE messages SET payload = :payload WHERE pk = :pk",
}


class RotationFailed(MailProxyError):
    code = "rotation_failed"


def register() -> None:
    """Add the rotation queries to both backends' named-query tables (idempotent)."""
    from mail_proxy.store import queries

    for backend in ("sqlite", "postgresql"):
        queries.load(backend).update(QUERIES)


class _Recoder:
    def __init__(self, ring: Any) -> None:
        self.ring = ring
        self.count = 0

    def value(self, value: str | None, where: str) -> str | None:
        if value is None:
            return None
        try:
            plain = self.ring.decrypt(value)
        except KeyRingError as exc:
            raise RotationFailed(f"cannot decrypt {where}: {exc.message}") from None
        self.count += 1
        return str(self.ring.encrypt(plain))

    def payload(self, text: str, where: str) -> str:
        payload = json.loads(text)
        for n, att in enumerate(payload.get("attachments") or []):
            auth = att.get("auth")
            if isinstance(auth, str):
                att["auth"] = self.value(auth, f"{where} attachment {n}")
            elif isinstance(auth, dict):  # stored in clear by an older system
                att["auth"] = self.ring.encrypt_json(auth)
                self.count += 1
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


async def reencrypt_all(core: Core, ring: Any) -> int:
    """Decrypt every value of data.md §4.1 and write it again under ``ring``'s primary.

    ``ring`` must hold every key still in use (the new primary plus the old keys). One
    transaction: any value that cannot be decrypted rolls everything back and raises
    :class:`RotationFailed` naming the table and row. Returns how many values changed.
    """
    rec = _Recoder(ring)
    async with core.store.transaction() as tx:
        for row in await tx.fetch("rotation_tenants"):
            where = f"tenants row '{row['id']}'"
            await tx.execute("rotation_tenant_write", id=row["id"], **{
                col: rec.value(row[col], f"{where} ({col})")
                for col in ("client_auth", "signing_secret", "large_file_config")})
        for row in await tx.fetch("rotation_accounts"):
            where = f"accounts row '{row['tenant_id']}/{row['id']}'"
            await tx.execute("rotation_account_write", tenant_id=row["tenant_id"], id=row["id"],
                             password=rec.value(row["password"], f"{where} (password)"),
                             imap_password=rec.value(row["imap_password"],
                                                     f"{where} (imap_password)"))
        for row in await tx.fetch("rotation_instance"):
            await tx.execute("rotation_instance_write", **{
                col: rec.value(row[col], f"instance row ({col})")
                for col in ("bounce_imap_password", "instance_secret")})
        for row in await tx.fetch("rotation_storages"):
            await tx.execute("rotation_storage_write", pk=row["pk"],
                             config=rec.value(row["config"], f"storages row {row['pk']}"))
        for row in await tx.fetch("rotation_large_files"):
            await tx.execute("rotation_large_file_write", id=row["id"],
                             storage_options=rec.value(row["storage_options"],
                                                       f"large_files row {row['id']}"))
        after = 0
        while True:
            rows = await tx.fetch("rotation_messages", after=after, limit=PAGE)
            for row in rows:
                await tx.execute("rotation_message_write", pk=row["pk"],
                                 payload=rec.payload(row["payload"], f"messages row {row['pk']}"))
            if len(rows) < PAGE:
                break
            after = int(rows[-1]["pk"])
    return rec.count
