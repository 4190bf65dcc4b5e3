"""An attachment credential stored before enqueue refused what an HTTP header cannot carry
(QA walkthrough 2026-11-24): the fetch fails permanently with a sentence that never quotes
it, against a real endpoint that must not be called."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mail_proxy.delivery.attachments import AttachmentFetcher, TenantFetchContext
from mail_proxy.errors import PermanentFailure
from mail_proxy.settings import RuntimeSettings
from tests.support.receiver import Receiver

LEGACY_TOKEN = "s3cr3t-legacy\u2026token"


@pytest.mark.parametrize("where", ["tenant", "attachment"])
async def test_a_stored_token_that_cannot_be_sent_fails_the_attachment(
        tmp_path: Path, where: str) -> None:
    cfg = dataclasses.replace(RuntimeSettings(), allow_private_urls=True)
    fetcher = AttachmentFetcher(cfg, cache_dir=tmp_path, version="9.9.9")
    legacy = {"method": "bearer", "token": LEGACY_TOKEN}
    # As stored (normalised at enqueue by an older version): no check runs on this path.
    item = {"filename": "inv.pdf", "storage_path": "inv.pdf", "fetch_mode": "endpoint",
            "mime_type": None, "content_md5": None, "content_id": None,
            "auth": legacy if where == "attachment" else None}
    try:
        async with Receiver(path="/mail-proxy/attachments") as rx:
            tenant = TenantFetchContext(
                tenant_id="acme", base_url=rx.url, attachment_path="/mail-proxy/attachments",
                client_auth=legacy if where == "tenant" else None)
            with pytest.raises(PermanentFailure) as info:
                await fetcher.fetch_all(tenant, [item])
    finally:
        await fetcher.close()
    assert rx.calls == []
    assert info.value.code == "attachment_error"
    assert "cannot be sent in an HTTP header" in info.value.message
    assert "s3cr3t" not in info.value.message and "\u2026" not in info.value.message
