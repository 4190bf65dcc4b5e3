"""Tenant-level commands: ``mail-proxy [NAME] [TENANT] send|accounts|messages|…``."""

from __future__ import annotations

from typing import Annotated

import typer

from mail_proxy.cli import accounts, messages, send, suppressions
from mail_proxy.cli.application import help_settings

app = typer.Typer(rich_markup_mode=None,
                  help="Commands on one tenant: mail-proxy [NAME] [TENANT] COMMAND …",
                  no_args_is_help=True, add_completion=False,
                  context_settings=help_settings())
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
BatchOpt = Annotated[str | None, typer.Option("--batch", help="Only this batch code.")]


@app.command("info")
def info(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Tenant representation, message counts and report state."""
    from mail_proxy.cli.info import tenant_info

    tenant_info(ctx.obj.instance, ctx.obj.tenant, json_output)


@app.command("run-now")
def run_now(ctx: typer.Context) -> None:
    """Wake the running worker for this tenant."""
    from mail_proxy.cli.info import run_now as wake

    wake(ctx.obj.instance, ctx.obj.tenant)


@app.command("suspend")
def suspend(ctx: typer.Context, batch: BatchOpt = None, json_output: JsonOpt = False) -> None:
    """Suspend sending (optionally one batch)."""
    from mail_proxy.cli.info import suspension

    suspension(ctx.obj.instance, ctx.obj.tenant, batch, suspend=True, json_output=json_output)


@app.command("activate")
def activate(ctx: typer.Context, batch: BatchOpt = None, json_output: JsonOpt = False) -> None:
    """Resume sending (optionally one batch)."""
    from mail_proxy.cli.info import suspension

    suspension(ctx.obj.instance, ctx.obj.tenant, batch, suspend=False, json_output=json_output)


app.command("send")(send.send)
app.add_typer(accounts.app, name="accounts")
app.add_typer(messages.app, name="messages")
app.add_typer(suppressions.app, name="suppressions")
