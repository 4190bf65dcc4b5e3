"""Composition of big messages runs in a thread, off the event loop (delivery.md §1)."""

from __future__ import annotations

from typing import Any

from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from tests.support import factories as f
from tests.support.dispatching import drive


async def test_a_large_body_is_composed_off_the_event_loop(core, smtp_server) -> None:
    """delivery.md §1: a big body (no attachment) must not stall the API and the other
    sends while it is encoded."""
    import threading

    from mail_proxy.delivery import sender as sender_module

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message("big", body="x" * 600_000), f.message("small"))
    threads: dict[str, str] = {}
    real = sender_module.build_message

    def build(payload: dict[str, Any], **kwargs: Any) -> bytes:
        threads[payload["subject"]] = threading.current_thread().name
        return real(payload, **kwargs)

    sender_module.build_message = build  # type: ignore[assignment]
    try:
        d = Dispatcher(core, owner="w:1:aaaa", smtp=SmtpPools(ehlo_name="t.local"))
        await drive(d)
    finally:
        sender_module.build_message = real
    main = threading.main_thread().name
    assert threads["Message small"] == main and threads["Message big"] != main, threads
    assert len(smtp_server.messages) == 2
    await d.smtp.close()
