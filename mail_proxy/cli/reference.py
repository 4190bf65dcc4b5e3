"""Generate docs/reference/cli.md from the commands' own help (so the two cannot drift).

``python -m mail_proxy.cli.reference docs/reference/cli.md`` rewrites the file; a test compares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

HEADER = """# `mail-proxy` command reference

Generated from `--help` by `python -m mail_proxy.cli.reference docs/reference/cli.md`;
do not edit by hand. The grammar and the behaviour are specified in spec/cli.md.
"""


def _walk(command: Any, ctx: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """(path, context) of ``command`` and of every sub-command below it.

    Each context is built as a real run builds it: with the command's own
    ``context_settings`` and its parent context, so inherited settings (``-h, --help``)
    show in the reference exactly as in ``--help``.
    """
    found = [(path, ctx)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        child = typer.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
        found += _walk(sub, child, [*path, name])
    return found


def _help(ctx: Any) -> str:
    return str(ctx.command.get_help(ctx)).rstrip()


def render() -> str:
    from mail_proxy.cli import instance_app, main_app, tenant_app

    sections = [HEADER]
    levels = [("Global commands", main_app.global_app, "mail-proxy"),
              ("Instance commands", instance_app.app, "mail-proxy NAME"),
              ("Tenant commands", tenant_app.app, "mail-proxy NAME TENANT")]
    for title, app, prog in levels:
        sections.append(f"## {title}\n")
        root = typer.main.get_command(app)
        ctx = typer.Context(root, info_name=prog, **root.context_settings)
        for path, command_ctx in _walk(root, ctx, []):
            name = " ".join([prog, *path])
            sections.append(f"### `{name}`\n\n```text\n{_help(command_ctx)}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference/cli.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
