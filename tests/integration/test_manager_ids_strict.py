"""The manager layer, below the API and the CLI: whole-value matching of ids, hosts, URLs and
addresses (a final newline is not "the end"), and messages of an unknown tenant are 404."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mail_proxy.errors import NotFound, ValidationFailed
from mail_proxy.manager import accounts, fields, messages, tenants
from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.security.crypto import KeyRing, generate_key


@pytest.fixture
async def core(tmp_path: Any) -> AsyncIterator[Core]:
    c = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", KeyRing([generate_key()]))
    yield c
    await c.close()


@pytest.mark.parametrize(("check", "value"), [
    (fields.identifier, "acme\n"), (fields.host, "smtp.x.test\n"), (fields.host, "x\n"),
    (fields.host, "fe80::1%eth0\n"), (fields.host, "fe80::1%a b"),
    (fields.http_url, "https://app.test\n"), (fields.http_url, "http://app.test/p?q=1\n")])
def test_a_final_newline_does_not_end_the_match(check: Any, value: str) -> None:
    with pytest.raises(fields.Bad):
        check(value)


async def test_tenant_and_account_writes_refuse_the_newline(core: Core) -> None:
    with pytest.raises(ValidationFailed) as failed:
        await tenants.put_tenant(core, {"id": "tnl\n", "name": "x"}, ADMIN)
    assert [f.field for f in failed.value.fields] == ["id"]
    await tenants.put_tenant(core, {"id": "tnl", "name": "x"}, ADMIN)
    with pytest.raises(ValidationFailed) as failed:
        await accounts.put_account(core, {"tenant_id": "tnl", "id": "anl\n",
                                          "host": "smtp.x.test\n", "port": 25}, ADMIN, None)
    assert {f.field for f in failed.value.fields} == {"id", "host"}
    assert [t["id"] for t in await tenants.list_tenants(core)] == ["tnl"]


async def test_messages_of_an_unknown_tenant_are_not_found(core: Core) -> None:
    await tenants.put_tenant(core, {"id": "acme"}, ADMIN)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: messages.list_messages(core, tenant_id="ghost"),
        lambda: messages.delete_messages(core, "ghost", ["m1"]),
        lambda: messages.retry_messages(core, "ghost", ["m1"]),
        lambda: messages.cleanup_messages(core, "ghost")]
    for call in calls:
        with pytest.raises(NotFound) as missing:
            await call()
        assert (missing.value.code, missing.value.detail) == (
            "tenant_not_found", {"tenant_id": "ghost"})
    assert (await messages.list_messages(core, tenant_id="acme"))["messages"] == []
    assert (await messages.list_messages(core, tenant_id=None))["messages"] == []
    assert (await messages.retry_messages(core, "acme", ["m1"]))["not_found"] == ["m1"]
