"""Start-up check: does this worker hold every key that the shared database uses?

Workers sharing a PostgreSQL database must all hold every key in use (data.md §4.2). A worker
started with an incomplete ring would fail sends with ``secret_unavailable`` one by one; the
caller refuses to start instead, naming the missing key ids (see :func:`refusal_message`).

Only ``ENC:v1:<kid>:`` values carry a key id; legacy ``ENC:`` values and plaintext cannot be
attributed to a key and are not reported here.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from typing import Any

_KID = re.compile(r"ENC:v1:([0-9a-f]{8}):")
PAGE = 1000
# Encrypted columns of data.md §4.1 reachable through the shared named queries.
TENANT_COLUMNS = ("client_auth", "signing_secret", "large_file_config")
ACCOUNT_COLUMNS = ("password", "imap_password")
INSTANCE_COLUMNS = ("bounce_imap_password", "instance_secret")


def kids_in(values: Iterable[Any]) -> set[str]:
    """Every key id written in these values (a payload may hold several)."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, str) and "ENC:v1:" in value:
            found.update(_KID.findall(value))
    return found


async def used_kids(store: Any) -> set[str]:
    """Key ids used anywhere in the database (messages are read a page at a time)."""
    found: set[str] = set()
    for row in await store.fetch("tenant_list", active_only=0):
        found |= kids_in(row.get(c) for c in TENANT_COLUMNS)
    for row in await store.fetch("account_list", tenant_id=None):
        found |= kids_in(row.get(c) for c in ACCOUNT_COLUMNS)
    instance = await store.fetch_one("instance_get")
    if instance is not None:
        found |= kids_in(instance.get(c) for c in INSTANCE_COLUMNS)
    before: int | None = None
    while True:
        rows = await store.fetch("message_list", tenant_id=None, status=None, batch_code=None,
                                 before_pk=before, limit=PAGE)
        found |= kids_in(r["payload"] for r in rows)
        if len(rows) < PAGE:
            return found
        before = min(int(r["pk"]) for r in rows)


async def missing_kids(store: Any, keyring: Container[str]) -> set[str]:
    """Key ids used by stored values and absent from ``keyring`` (empty: all is well)."""
    return {kid for kid in await used_kids(store) if kid not in keyring}


def refusal_message(missing: set[str], instance: str = "NAME", *, creating: bool = False) -> str:
    """The start-up refusal shown when :func:`missing_kids` is not empty. An instance being
    created is not kept after it: there is no encryption.key to copy lines into."""
    kids = ", ".join(sorted(missing))
    plural = "keys" if len(missing) > 1 else "key"
    them = "them" if len(missing) > 1 else "it"
    head = (f"the database holds values encrypted with {plural} {kids}, missing from the key "
            f"ring of instance '{instance}'; ")
    if creating:
        return head + (f"create the instance with `mail-proxy start {instance} --db URL "
                       f"--key-file PATH` (a copy of the encryption.key of an instance that "
                       f"has {them}), or with MAIL_PROXY_ENCRYPTION_KEY set")
    return head + (f"copy the lines of encryption.key from an instance that has {them} into "
                   f"this instance's encryption.key (or set MAIL_PROXY_ENCRYPTION_KEY), then "
                   f"start again")
