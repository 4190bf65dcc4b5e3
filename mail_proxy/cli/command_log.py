"""``mail-proxy NAME command-log …`` (cli.md §5, api.md §8): list, export, purge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, CliExit, err, out, print_json, table
from mail_proxy.cli.dataview import cell, checked_cursor, local_time, parse_when

app = typer.Typer(rich_markup_mode=None, help="The audit log of commands.",
                  no_args_is_help=True, add_completion=False)
When = "epoch seconds, ISO 8601 date/time, or an age such as 30d, 12h, 15m"
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help=f"From ({When}).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help=f"Until ({When}).")]


def _instance(ctx: typer.Context) -> str | None:
    obj: AppContext = ctx.obj
    return obj.instance


@app.command("list")
def list_(ctx: typer.Context, tenant: TenantOpt = None, since: SinceOpt = None,
          until: UntilOpt = None,
          endpoint: Annotated[str | None, typer.Option(
              "--endpoint", help="Endpoint text, e.g. 'POST /account'.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
          cursor: Annotated[str | None, typer.Option(
              "--cursor", help="Continue after a previous page (its next_cursor).")] = None,
          json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")]
          = False) -> None:
    """Rows of command_log, oldest first."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import command_log as manager

    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    checked_cursor(cursor, manager.decode_cursor)
    answer = with_core(_instance(ctx), lambda s: manager.list_commands(
        s.core, tenant_id=tenant, since=start, until=end, endpoint=endpoint, limit=limit,
        cursor=cursor))
    if json_output:
        print_json({"ok": True, **answer})
        return
    if not answer["commands"]:
        err("no commands recorded")
        return
    table(["ID", "TIME", "ACTOR", "ENDPOINT", "TENANT", "STATUS"],
          [[str(r["id"]), local_time(r["command_ts"]), r["actor"], r["endpoint"],
            cell(r["tenant_id"]), cell(r["response_status"])] for r in answer["commands"]])
    if answer.get("next_cursor"):
        err(f"more rows: add --cursor {answer['next_cursor']}")


@app.command("export")
def export(ctx: typer.Context, tenant: TenantOpt = None, since: SinceOpt = None,
           until: UntilOpt = None,
           output: Annotated[Path | None, typer.Option(
               "-o", "--output", help="Write to FILE ('-': stdout).")] = None) -> None:
    """The command-log export document, to FILE or stdout."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import command_log as manager

    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    answer = with_core(_instance(ctx), lambda s: manager.export_commands(
        s.core, tenant_id=tenant, since=start, until=end))
    document = {"ok": True, **answer}
    if output is None or str(output) == "-":  # "-" is standard output, as usual
        print_json(document)
        return
    text = json.dumps(document, indent=2) + "\n"
    from mail_proxy.instance.paths import os_errors

    with os_errors("write", output):
        output.write_text(text, encoding="utf-8")
    err(f"wrote {len(answer['commands'])} commands to {output}")


@app.command("purge")
def purge(ctx: typer.Context,
          before: Annotated[str, typer.Option("--before", help=f"Cut-off ({When}).",
                                              show_default=False)],
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> int:
    """Delete older rows; prints the count."""
    from mail_proxy.cli.asking import confirm_destructive
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.cli.dataview import can_prompt
    from mail_proxy.manager import command_log as manager

    cutoff = parse_when(before, "--before")
    assert cutoff is not None
    if not confirm_destructive(f"Delete command-log rows older than {local_time(cutoff)}?",
                               yes=yes, can_prompt=can_prompt(False)):
        raise CliExit(1, "nothing deleted")

    async def run(s: Session) -> Any:
        async def action() -> tuple[int, Any]:
            return 200, {"ok": True, "removed": await manager.purge_commands(s.core, cutoff)}

        return await logged(s, "cli command-log purge", None, {"before": cutoff}, action)

    answer = with_core(_instance(ctx), run)
    out(f"removed {answer['removed']} rows")
    return 0
