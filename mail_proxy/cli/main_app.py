"""The three typer apps of the grammar and the dispatch from a resolved route to one of them."""

from __future__ import annotations

import typer

from mail_proxy.cli import completion, context, instances, serve
from mail_proxy.cli.application import help_settings

EPILOG = (
    "Instance commands: mail-proxy [NAME] info | stats | token | run-now | config | "
    "command-log | rotate-key | tenants\n\n"
    "Tenant commands: mail-proxy [NAME] [TENANT] info | run-now | suspend | activate | send | "
    "accounts | messages | suppressions\n\n"
    "NAME and TENANT may be left out when a context is set (mail-proxy use, GMP_INSTANCE, "
    "GMP_TENANT)."
)

global_app = typer.Typer(rich_markup_mode=None,
    help="mail-proxy: accept e-mail over HTTP, deliver it over pooled SMTP, report back.",
    epilog=EPILOG, no_args_is_help=True, add_completion=False,
    context_settings=help_settings())
instances.register(global_app)
serve.register(global_app)
context.register(global_app)
global_app.add_typer(completion.app, name="completion")


@global_app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version.")) -> None:
    """mail-proxy: accept e-mail over HTTP, deliver it over pooled SMTP, report back."""
    if version:  # normally answered before typer loads; kept so --help lists it
        from mail_proxy import __version__

        typer.echo(f"mail-proxy {__version__}")
        raise typer.Exit(0)


def run_route(route: object) -> int:
    """Invoke the typer app of ``route``'s level with the resolved context as ``ctx.obj``."""
    from mail_proxy.cli.application import AppContext, err
    from mail_proxy.cli.grammar import Route

    assert isinstance(route, Route)
    if route.level == "global":
        app, prog = global_app, "mail-proxy"
    elif route.level == "instance":
        from mail_proxy.cli.instance_app import app

        prog = f"mail-proxy {route.instance}"
    else:
        from mail_proxy.cli.tenant_app import app

        prog = f"mail-proxy {route.instance} {route.tenant}"
    if route.level != "global" and route.used_context:
        err(route.notice)
    obj = AppContext(route.instance, route.tenant, route.instance_source, route.tenant_source)
    command = typer.main.get_command(app)
    result = command.main(args=route.args, prog_name=prog, obj=obj, standalone_mode=False)
    return result if isinstance(result, int) else 0
