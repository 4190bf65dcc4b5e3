"""Runtime settings: read, patch, validation as a whole, secret column, version bump."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest

from mail_proxy.errors import ValidationFailed
from mail_proxy.manager import instance
from mail_proxy.manager.core import Core
from mail_proxy.security.crypto import KeyRing, generate_key


@pytest.fixture
async def core(tmp_path: Any) -> AsyncIterator[Core]:
    c = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", KeyRing([generate_key()]))
    yield c
    await c.close()


async def stored(core: Core) -> tuple[dict[str, Any], int, str | None]:
    async with aiosqlite.connect(core.store.path) as db:  # type: ignore[attr-defined]
        cursor = await db.execute("SELECT settings, settings_version, bounce_imap_password "
                                  "FROM instance")
        row = await cursor.fetchone()
    assert row is not None
    return json.loads(row[0]), row[1], row[2]


async def test_defaults(core: Core) -> None:
    out = await instance.get_settings(core)
    assert out["max_retries"] == 5 and out["retry_delays"] == [60, 300, 900, 3600, 7200]
    assert out["has_bounce_imap_password"] is False and "bounce_imap_password" not in out


async def test_patch_applies_at_once_and_persists(core: Core, tmp_path: Any) -> None:
    _, version, _ = await stored(core)
    out = await instance.patch_settings(core, {"default_priority": "high", "max_retries": 9,
                                               "retry_delays": [5, 10]})
    assert out["default_priority"] == 1 and out["max_retries"] == 9
    assert core.settings.max_retries == 9 and core.settings_version == version + 1
    settings, new_version, _ = await stored(core)
    assert settings == {"default_priority": 1, "max_retries": 9, "retry_delays": [5, 10]}
    assert new_version == version + 1
    other = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", core.keyring)
    try:
        assert (await instance.get_settings(other))["retry_delays"] == [5, 10]
    finally:
        await other.close()
    out = await instance.patch_settings(core, {"max_retries": None, "default_priority": 2})
    assert out["max_retries"] == 5
    assert (await stored(core))[0] == {"retry_delays": [5, 10]}


async def test_invalid_change_lists_every_key_and_stores_nothing(core: Core) -> None:
    await instance.patch_settings(core, {"max_retries": 7})
    before = await stored(core)
    body = {"max_retries": 51, "dispatch_enabled": "yes", "colour": "red",
            "retry_delays": [], "send_loop_interval": "fast", "max_recipients": 100}
    with pytest.raises(ValidationFailed) as err:
        await instance.patch_settings(core, body)
    assert {f.field: f.code for f in err.value.fields} == {
        "max_retries": "out_of_range", "dispatch_enabled": "invalid_type",
        "colour": "unknown_field", "retry_delays": "invalid_value",
        "send_loop_interval": "invalid_type"}
    assert await stored(core) == before and core.settings.max_recipients == 500
    with pytest.raises(ValidationFailed) as err:
        await instance.patch_settings(core, {"bounce_enabled": True})
    assert err.value.fields[0].field == "bounce_imap_host"
    for body in (None, [], "x"):
        with pytest.raises(ValidationFailed):
            await instance.patch_settings(core, body)


async def test_bounce_password_is_encrypted_apart(core: Core) -> None:
    out = await instance.patch_settings(core, {"bounce_imap_password": "hunter2",
                                               "bounce_imap_host": "imap.test"})
    assert out["has_bounce_imap_password"] is True and "hunter2" not in json.dumps(out)
    settings, _, column = await stored(core)
    assert "bounce_imap_password" not in settings and settings["bounce_imap_host"] == "imap.test"
    assert column is not None and column.startswith("ENC:")
    assert core.keyring.decrypt(column) == "hunter2"
    out = await instance.patch_settings(core, {"bounce_imap_port": 143})
    assert out["has_bounce_imap_password"] is True  # untouched by other changes
    out = await instance.patch_settings(core, {"bounce_imap_password": None})
    assert out["has_bounce_imap_password"] is False and (await stored(core))[2] is None
    with pytest.raises(ValidationFailed):
        await instance.patch_settings(core, {"bounce_imap_password": 5})
