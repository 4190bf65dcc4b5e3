"""Instance-level commands: ``mail-proxy [NAME] info|stats|token|run-now|config|…``."""

from __future__ import annotations

from typing import Annotated

import typer

from mail_proxy.cli import command_log, rotate, settings, tenants
from mail_proxy.cli.application import AppContext, err, help_settings, out

app = typer.Typer(rich_markup_mode=None,
                  help="Commands on one instance: mail-proxy [NAME] COMMAND …",
                  no_args_is_help=True, add_completion=False,
                  context_settings=help_settings())


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


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@app.command("info")
def info(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Name, state, URL, database, version and counts."""
    from mail_proxy.cli.info import instance_info

    instance_info(ctx.obj.instance, json_output)


@app.command("stats")
def stats(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Message and report statistics."""
    from mail_proxy.cli.info import stats as show_stats

    show_stats(ctx.obj.instance, json_output)


@app.command("run-now")
def run_now(ctx: typer.Context) -> None:
    """Wake the running worker's dispatcher and reporter."""
    from mail_proxy.cli.info import run_now as wake

    wake(ctx.obj.instance, None)


app.command("rotate-key")(rotate.rotate_key)
app.add_typer(settings.app, name="config")
app.add_typer(command_log.app, name="command-log")
app.add_typer(tenants.app, name="tenants")
