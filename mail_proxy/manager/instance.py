"""Runtime settings: read and patch (api.md §8, settings.md §1).

Non-default values live in ``instance.settings`` as JSON; the one secret setting,
``bounce_imap_password``, lives encrypted in its own column and is never part of that JSON
nor of any answer (only ``has_bounce_imap_password``).
"""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.errors import StorageError
from mail_proxy.manager.core import Core, now
from mail_proxy.settings import SECRET_SETTINGS, RuntimeSettings, validate_changes

_BOUNCE_PASSWORD = "bounce_imap_password"


async def _instance_row(core: Core, tx: Any = None) -> dict[str, Any]:
    row = await (tx or core.store).fetch_one("instance_get")
    if row is None:  # the first migration creates it; missing means a broken database
        raise StorageError("the instance row is missing from the database")
    return row


def _public(settings: RuntimeSettings, row: dict[str, Any]) -> dict[str, Any]:
    out = settings.public_dict()
    for name in SECRET_SETTINGS:
        out[f"has_{name}"] = row.get(name) is not None
    return out


async def get_settings(core: Core) -> dict[str, Any]:
    """Every runtime setting with its effective value; secrets as ``has_<name>``."""
    await core.reload_settings()  # pick up changes made by the CLI or another worker
    row = await _instance_row(core)
    return _public(core.settings, row)


async def patch_settings(core: Core, body: object) -> dict[str, Any]:
    """Validate the whole change (422 lists every bad key), store it with
    ``settings_version + 1`` and apply it to this process at once."""
    async with core.store.transaction() as tx:
        row = await _instance_row(core, tx)
        current: dict[str, Any] = json.loads(row["settings"] or "{}")
        merged = validate_changes(current, body)
        assert isinstance(body, dict)  # validate_changes refuses anything else
        password = row[_BOUNCE_PASSWORD]
        if _BOUNCE_PASSWORD in body:
            value = merged.pop(_BOUNCE_PASSWORD, None)
            password = core.keyring.encrypt(value) if value is not None else None
        merged.pop(_BOUNCE_PASSWORD, None)
        await tx.execute("instance_settings_write", settings=json.dumps(merged, sort_keys=True),
                         bounce_imap_password=password, now=now())
        fresh = await _instance_row(core, tx)
    core.apply_settings(RuntimeSettings.from_stored(merged), int(fresh["settings_version"]))
    return _public(core.settings, fresh)
