"""Tenant-level commands: ``mail-proxy [NAME] [TENANT] send|accounts|messages|…``."""

from __future__ import annotations

import typer

from mail_proxy.cli import accounts, messages, suppressions
from mail_proxy.cli.placeholders import add_placeholders

app = typer.Typer(rich_markup_mode=None,
                  help="Commands on one tenant: mail-proxy [NAME] [TENANT] COMMAND …",
                  no_args_is_help=True, add_completion=False)

add_placeholders(app, {
    "info": "Tenant representation, message counts and report state.",
    "run-now": "Wake the running worker for this tenant.",
    "suspend": "Suspend sending (optionally one batch).",
    "activate": "Resume sending (optionally one batch).",
    "send": "Queue .eml files as messages.",
})
app.add_typer(accounts.app, name="accounts")
app.add_typer(messages.app, name="messages")
app.add_typer(suppressions.app, name="suppressions")
