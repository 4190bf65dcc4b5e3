"""The command log: masking, elision, caps, switch, filters, pages, export, purge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mail_proxy.errors import BadRequest
from mail_proxy.manager import command_log
from mail_proxy.manager.core import Core
from mail_proxy.security.crypto import KeyRing, generate_key


@pytest.fixture
async def core(tmp_path: Any) -> AsyncIterator[Core]:
    c = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", KeyRing([generate_key()]))
    yield c
    await c.close()


async def log(core: Core, endpoint: str = "POST /account", tenant_id: str | None = "acme",
              payload: object = None, body: object = None) -> None:
    await command_log.record(core, actor="admin", endpoint=endpoint, tenant_id=tenant_id,
                             payload=payload if payload is not None else {"id": "x"},
                             response_status=200, response_body=body)


async def test_secrets_are_masked(core: Core) -> None:
    payload = {"id": "smtp1", "password": "pw", "imap_password": None,
               "client_auth": {"method": "bearer", "token": "tok"},
               "signing_secret": "s" * 40, "large_file_config": {"storage_options": {"k": 1}},
               "messages": [{"attachments": [{"auth": {"method": "basic", "user": "u",
                                                       "password": "p2"}}]}]}
    await log(core, payload=payload, body={"ok": True, "api_key": "KEY-123"})
    row = (await command_log.list_commands(core))["commands"][0]
    text = json.dumps(row)
    for secret in ("pw", "tok", "s" * 40, "p2", "KEY-123"):
        assert f'"{secret}"' not in text
    p = row["payload"]
    assert p["password"] == "***" and p["imap_password"] is None
    assert p["client_auth"] == {"method": "bearer", "token": "***"}
    assert p["large_file_config"]["storage_options"] == "***"
    assert p["messages"][0]["attachments"][0]["auth"]["user"] == "u"
    assert row["response_body"] == {"ok": True, "api_key": "***"}
    assert row["actor"] == "admin" and row["response_status"] == 200


async def test_big_base64_elided_and_payload_capped(core: Core) -> None:
    big = "A" * (70 * 1024)
    await log(core, payload={"messages": [{"attachments": [{"storage_path": big},
                                                           {"storage_path": "base64:QUJD"}]}]})
    atts = (await command_log.list_commands(core))["commands"][0]["payload"]["messages"][0][
        "attachments"]
    assert atts[0]["storage_path"] == f"base64:<elided {len(big)} bytes>"
    assert atts[1]["storage_path"] == "base64:QUJD"
    await log(core, payload={"messages": [{"subject": "x" * 5000}] * 20},
              body={"text": "y" * 100_000})
    row = (await command_log.list_commands(core))["commands"][1]
    assert row["payload"]["truncated"] is True and row["response_body"]["truncated"] is True
    assert len(json.dumps(row["response_body"])) <= 64 * 1024 + 512


async def test_disabled_log_records_nothing(core: Core) -> None:
    core.settings.command_log_enabled = False
    await log(core)
    assert (await command_log.list_commands(core))["commands"] == []


async def test_filters_pages_export_purge(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(100, 200))
    monkeypatch.setattr(command_log, "now", lambda: next(clock))
    await log(core, "POST /account", "acme")           # ts 100
    await log(core, "PATCH /tenant/acme", "acme")      # ts 101
    await log(core, "POST /tenant", None)              # ts 102
    await log(core, "POST /account", "beta")           # ts 103
    await log(core, "DELETE /account/100%_x", "beta")  # ts 104
    page = await command_log.list_commands(core, limit=2)
    assert [c["command_ts"] for c in page["commands"]] == [100, 101]
    page = await command_log.list_commands(core, limit=2, cursor=page["next_cursor"])
    assert [c["command_ts"] for c in page["commands"]] == [102, 103]
    page = await command_log.list_commands(core, limit=2, cursor=page["next_cursor"])
    assert [c["command_ts"] for c in page["commands"]] == [104]
    assert page["next_cursor"] is None
    got = await command_log.list_commands(core, tenant_id="beta")
    assert [c["command_ts"] for c in got["commands"]] == [103, 104]
    got = await command_log.list_commands(core, since=101, until="103")
    assert [c["command_ts"] for c in got["commands"]] == [101, 102, 103]
    got = await command_log.list_commands(core, endpoint="post /ACC")
    assert [c["command_ts"] for c in got["commands"]] == [100, 103]
    got = await command_log.list_commands(core, endpoint="0%_")
    assert [c["command_ts"] for c in got["commands"]] == [104]
    assert (await command_log.list_commands(core, endpoint="%"))["commands"][0][
        "command_ts"] == 104
    for kwargs in ({"limit": 1001}, {"limit": 0}, {"limit": True}, {"cursor": "!!"},
                   {"cursor": "eyJ4IjogMX0"}, {"since": "yesterday"}, {"until": [1]}):
        with pytest.raises(BadRequest) as err:
            await command_log.list_commands(core, **kwargs)
        assert err.value.code == "invalid_parameter"
    export = await command_log.export_commands(core, tenant_id="acme")
    assert export["truncated"] is False
    assert export["commands"][0] == {"endpoint": "POST /account", "tenant_id": "acme",
                                     "payload": {"id": "x"}, "command_ts": 100}
    assert await command_log.purge_commands(core, 102) == 2
    assert len((await command_log.list_commands(core))["commands"]) == 3


async def test_query_parameters_of_any_type(core: Core) -> None:
    await log(core)
    huge_cursor = command_log.encode_cursor(10**30)
    weird: list[Any] = [None, True, 0, -1, 1.5, float("nan"), "", "x", [], {}, "9" * 40,
                        10**40, huge_cursor]
    for value in weird:
        for name in ("tenant_id", "since", "until", "endpoint", "limit", "cursor"):
            try:
                await command_log.list_commands(core, **{name: value})
            except BadRequest:
                pass
        try:
            await command_log.purge_commands(core, value)
        except BadRequest:
            pass


async def test_big_batches_are_recorded_with_their_first_messages(core: Core) -> None:
    await log(core, payload={"messages": [{"id": f"m{i}", "body": "x" * 100}
                                          for i in range(1000)]})
    payload = (await command_log.list_commands(core))["commands"][0]["payload"]
    assert [m["id"] for m in payload["messages"]] == [f"m{i}" for i in range(20)]
    assert payload["messages_omitted"] == 980


async def test_a_batch_that_fits_the_row_is_recorded_whole(core: Core) -> None:
    """Message-commands hunt: 25 messages in 2 KB were recorded as 20 and a count."""
    await log(core, payload={"messages": [{"id": f"m{i}"} for i in range(1000)]})
    payload = (await command_log.list_commands(core))["commands"][0]["payload"]
    assert len(payload["messages"]) == 1000 and "messages_omitted" not in payload


async def test_deep_payloads_are_recorded_down_to_a_bound(core: Core) -> None:
    """Masking walks the payload recursively: past 32 levels it records a note instead of
    going on towards the interpreter's recursion limit."""
    deep: object = {"token": "secret"}
    for _ in range(200):
        deep = {"a": deep}
    await log(core, payload={"id": "x", "deep": deep, "list": [[[["ok"]]]]})
    [row] = (await command_log.list_commands(core))["commands"][-1:]
    payload = row["payload"]
    assert payload["list"] == [[[["ok"]]]]
    level = payload["deep"]
    for _ in range(31):
        level = level["a"]
    assert level == "<nested deeper than 32 levels>"
    assert "secret" not in json.dumps(payload)
