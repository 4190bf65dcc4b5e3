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


def _walk(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, command)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _walk(sub, [*path, name])
    return found


def _help(command: Any, prog: str) -> str:
    ctx = typer.Context(command, info_name=prog)
    return str(command.get_help(ctx)).rstrip()


def render() -> str:
    from mail_proxy.cli import instance_app, main_app, tenant_app

    sections = [HEADER]
    levels = [("Global commands", main_app.global_app, "mail-proxy"),
              ("Instance commands", instance_app.app, "mail-proxy NAME"),
              ("Tenant commands", tenant_app.app, "mail-proxy NAME TENANT")]
    for title, app, prog in levels:
        sections.append(f"## {title}\n")
        for path, command in _walk(typer.main.get_command(app), []):
            name = " ".join([prog, *path])
            sections.append(f"### `{name}`\n\n```text\n{_help(command, name)}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference/cli.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
