"""``mail-proxy NAME TENANT suppressions …`` (enterprise.md §2)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, err, out, print_json, table
from mail_proxy.cli.dataview import cell, local_time

app = typer.Typer(rich_markup_mode=None, help="Suppression list of the tenant.",
                  no_args_is_help=True, add_completion=False)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
AddressArg = Annotated[str, typer.Argument(help="E-mail address.", show_default=False)]


def _where(ctx: typer.Context) -> tuple[str | None, str]:
    obj: AppContext = ctx.obj
    assert obj.tenant is not None
    return obj.instance, obj.tenant


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Suppressed addresses."""
    from mail_proxy.cli.database import Session, with_core
    from mail_proxy.manager import suppressions as manager

    instance, tenant = _where(ctx)

    async def run(s: Session) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        cursor = None
        while True:  # the CLI shows the whole list: follow the pages
            page = await manager.list_suppressions(s.core, tenant, limit=1000, cursor=cursor)
            entries += page["suppressions"]
            cursor = page["next_cursor"]
            if cursor is None:
                return entries

    entries = with_core(instance, run)
    if json_output:
        print_json({"ok": True, "suppressions": entries, "next_cursor": None})
        return
    if not entries:
        err("no suppressed addresses")
        return
    table(["ADDRESS", "SOURCE", "REASON", "BOUNCE", "CREATED"],
          [[e["address"], e["source"], cell(e["reason"]), cell(e["bounce_status"]),
            local_time(e["created_at"])] for e in entries])


@app.command("add")
def add(ctx: typer.Context, address: AddressArg,
        reason: Annotated[str | None, typer.Option("--reason", help="Why.")] = None,
        json_output: JsonOpt = False) -> None:
    """Suppress an address."""
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.manager import suppressions as manager

    instance, tenant = _where(ctx)
    body: dict[str, Any] = {"tenant_id": tenant, "address": address}
    if reason is not None:
        body["reason"] = reason

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            entry, created = await manager.add_suppression(s.core, body, s.principal, tenant)
            return (201 if created else 200), {"ok": True, "suppression": entry}

        return await logged(s, "POST /suppressions", tenant, body, action)

    answer = with_core(instance, run)
    if json_output:
        print_json(answer)
    else:
        out(f"suppressed {answer['suppression']['address']}")


@app.command("remove")
def remove(ctx: typer.Context, address: AddressArg, json_output: JsonOpt = False) -> int:
    """Remove an address from the list."""
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.manager import suppressions as manager

    instance, tenant = _where(ctx)

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            removed = await manager.remove_suppression(s.core, tenant, address)
            return 200, {"ok": True, "removed": removed}

        return await logged(s, "DELETE /suppressions/{address}", tenant,
                            {"tenant_id": tenant, "address": address}, action)

    answer = with_core(instance, run)
    if json_output:
        print_json(answer)
    elif answer["removed"]:
        out(f"removed {address}")
    else:
        err(f"{address} was not on the list")
    return 0
