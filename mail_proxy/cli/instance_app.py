"""Instance-level commands: ``mail-proxy [NAME] info|stats|token|run-now|config|…``."""

from __future__ import annotations

from typing import Annotated

import typer

from mail_proxy.cli import command_log, settings, tenants
from mail_proxy.cli.application import AppContext, err, out
from mail_proxy.cli.placeholders import add_placeholders

app = typer.Typer(rich_markup_mode=None,
                  help="Commands on one instance: mail-proxy [NAME] COMMAND …",
                  no_args_is_help=True, add_completion=False)


@app.command("token")
def token(ctx: typer.Context,
          regenerate: Annotated[bool, typer.Option(
              "--regenerate", help="Write a new token; the running worker reloads it.")] = False,
          ) -> None:
    """Print the admin token (or replace it with --regenerate)."""
    from mail_proxy.instance import control

    obj: AppContext = ctx.obj
    assert obj.instance is not None
    if regenerate:
        out(control.regenerate_token(obj.instance, out=out, err=err))
    else:
        out(control.read_token(obj.instance))


add_placeholders(app, {
    "info": "Name, state, URL, database, version and counts.",
    "stats": "Message and report statistics.",
    "run-now": "Wake the running worker's dispatcher and reporter.",
    "rotate-key": "Rotate the encryption key ring (data.md §4.4).",
})
app.add_typer(settings.app, name="config")
app.add_typer(command_log.app, name="command-log")
app.add_typer(tenants.app, name="tenants")
