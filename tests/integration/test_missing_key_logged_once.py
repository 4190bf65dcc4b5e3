"""A worker whose key ring lacks the key of a stored SMTP password says so once per key
(security.md, "Rotation"), and again after a reload if the key is still missing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mail_proxy.delivery.accounts import AccountConfigs
from mail_proxy.manager.core import Core
from mail_proxy.security.crypto import KeyRing, generate_key
from tests.support import factories


async def test_a_missing_kid_is_logged_once_per_key(tmp_path: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite://{tmp_path / 'db.sqlite'}"
    writer = await Core.open(url, KeyRing([generate_key()]))
    await factories.tenant(writer)
    for account_id in ("one", "two"):
        await factories.account(writer, 2525, account_id=account_id, user="u",
                                password="s3cret-password")
    missing = writer.keyring.primary_kid
    await writer.close()

    core = await Core.open(url, KeyRing([generate_key()]))  # a ring without that key
    try:
        configs = AccountConfigs(core)
        with caplog.at_level(logging.ERROR, logger="mail_proxy.delivery"):
            for account_id in ("one", "two", "one"):
                config = await configs.get("acme", account_id, fresh=True)
                assert config is not None and config.target is None
                assert missing in (config.secret_error or "")
            lines = [r.getMessage() for r in caplog.records if missing in r.getMessage()]
            assert len(lines) == 1, lines
            assert "s3cret" not in lines[0] and "encryption.key" in lines[0]
            configs.forget()  # what SIGHUP does
            await configs.get("acme", "two")
            lines = [r.getMessage() for r in caplog.records if missing in r.getMessage()]
            assert len(lines) == 2, lines
    finally:
        await core.close()
