"""Command words whose bodies call ``mail_proxy.manager`` (written in a later pass).

They already route and show help, so the grammar, completion and the generated reference are
complete; running one exits 1 with ``error: not implemented yet``.
"""

from __future__ import annotations

import typer

from mail_proxy.cli.application import not_implemented

LOOSE = {"allow_extra_args": True, "ignore_unknown_options": True}


def _placeholder(ctx: typer.Context) -> None:
    not_implemented()


def add_placeholders(app: typer.Typer, commands: dict[str, str]) -> None:
    for name, text in commands.items():
        app.command(name, help=text, context_settings=LOOSE)(_placeholder)


def placeholder_group(text: str, commands: dict[str, str]) -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None, help=text, no_args_is_help=True,
                      add_completion=False)
    add_placeholders(app, commands)
    return app
