"""``mail-proxy NAME TENANT messages …`` (cli.md §6): list, show, delete, retry."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, CliExit, err, out, print_json, table
from mail_proxy.cli.dataview import cell, local_time, record_pairs, record_table

app = typer.Typer(rich_markup_mode=None, help="Messages of the tenant.", no_args_is_help=True,
                  add_completion=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
IdsArg = Annotated[list[str], typer.Argument(help="Message ids.", show_default=False)]
COLUMNS = ["ID", "STATUS", "PRIO", "ACCOUNT", "CREATED", "SENT", "ATTEMPTS", "TO", "SUBJECT",
           "LAST ERROR"]


def _where(ctx: typer.Context) -> tuple[str | None, str]:
    obj: AppContext = ctx.obj
    assert obj.tenant is not None
    return obj.instance, obj.tenant


def _to(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return cell(value)


def _row(m: dict[str, Any], times: bool) -> list[str]:
    when = local_time if times else (lambda v: "" if v is None else str(v))
    # last_error is the last failure (data.md), kept once a retry succeeds; in the table a
    # sent message showed "connection refused" as its LAST ERROR (delivery hunt). The CSV
    # keeps the column as stored; `messages show` tells the whole story.
    error = None if times and m["status"] == "sent" else m["last_error"]
    return [m["id"], m["status"], str(m["priority"]), cell(m["account_id"]),
            when(m["created_at"]), when(m["sent_at"]), str(m["attempts"]), _to(m["to"]),
            cell(m["subject"]), error or ("-" if times else "")]


@app.command("list")
def list_(ctx: typer.Context,
          status: Annotated[str | None, typer.Option(
              "--status", help="queued, deferred, sending, sent, error, cancelled or all.")
          ] = None,
          batch: Annotated[str | None, typer.Option("--batch", help="Batch code.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
          cursor: Annotated[str | None, typer.Option(
              "--cursor", help="Continue after a previous page (its next_cursor).")] = None,
          json_output: JsonOpt = False,
          csv_output: Annotated[bool, typer.Option("--csv", help="CSV with epoch times.")
                                ] = False) -> None:
    """Messages, newest first."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.cli.dataview import checked_cursor, one_of
    from mail_proxy.manager import messages as manager

    if json_output and csv_output:
        raise CliExit(2, "give --json or --csv, not both")
    one_of(status, "--status", (*manager.STATUSES, "all"))
    checked_cursor(cursor, manager.decode_cursor)
    instance, tenant = _where(ctx)
    answer = with_core(instance, lambda s: manager.list_messages(
        s.core, tenant_id=tenant, status=status, batch_code=batch, limit=limit,
        cursor=cursor))
    if json_output:
        print_json(answer)
        return
    if csv_output:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(_row(m, times=False) for m in answer["messages"])
        if answer["next_cursor"]:  # on stderr: stdout stays pure CSV (message-commands hunt)
            err(f"more messages: add --cursor {answer['next_cursor']}")
        return
    if not answer["messages"]:
        err("no messages")
        return
    table(COLUMNS, [_row(m, times=True) for m in answer["messages"]])
    if answer["next_cursor"]:
        err(f"more messages: add --cursor {answer['next_cursor']}")


@app.command("show")
def show(ctx: typer.Context,
         message_id: Annotated[str, typer.Argument(help="Message id.", show_default=False)],
         history: Annotated[bool, typer.Option(
             "--history", help="Add the event table (--json always has the events).")] = False,
         json_output: JsonOpt = False) -> None:
    """One message record."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import messages as manager

    instance, tenant = _where(ctx)
    message = with_core(instance, lambda s: manager.get_message(s.core, tenant, message_id))
    if json_output:  # the object GET /messages/{id} answers, events included (cli.md §8)
        print_json({"ok": True, "message": message})
        return
    shown = {k: v for k, v in message.items() if k not in ("events", "payload")}
    record_table(record_pairs(shown, ("created_at", "updated_at", "deferred_ts",
                                      "next_attempt_at", "sent_at", "finished_at")))
    if history:
        out()
        table(["TIME", "EVENT", "DESCRIPTION"],
              [[local_time(e.get("event_ts") or e.get("created_at")),
                cell(e.get("event_type")), cell(e.get("description"))]
               for e in message["events"]])


@app.command("delete")
def delete(ctx: typer.Context, ids: IdsArg,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
           json_output: JsonOpt = False) -> None:
    """Delete messages (not those being sent)."""
    from mail_proxy.cli.asking import confirm_destructive
    from mail_proxy.cli.dataview import can_prompt
    from mail_proxy.manager import messages as manager

    instance, tenant = _where(ctx)
    if not confirm_destructive(f"Delete {len(ids)} message(s)?", yes=yes,
                               can_prompt=can_prompt(False)):
        raise CliExit(1, "nothing deleted")
    answer = _write(instance, tenant, "POST /commands/delete-messages", ids,
                    manager.delete_messages)
    if json_output:
        print_json(answer)
    else:
        out(f"removed: {answer['removed']}")
        if answer["not_found"]:
            out(f"not found: {', '.join(answer['not_found'])}")
        if answer["in_flight"]:
            out(f"in flight (left alone): {', '.join(answer['in_flight'])}")
    _all_done(answer["not_found"] or answer["in_flight"], "deleted")


def _all_done(left: object, verb: str) -> None:
    """Exit 1 when some of the ids asked for were not acted on (cli.md: 1 refused/failed):
    a script must be able to tell that part of the request did nothing."""
    if left:
        raise CliExit(1, f"some messages were not {verb} (listed above)")


@app.command("retry")
def retry(ctx: typer.Context, ids: IdsArg, json_output: JsonOpt = False) -> None:
    """Retry messages in error, cancelled or deferred."""
    from mail_proxy.manager import messages as manager

    instance, tenant = _where(ctx)
    answer = _write(instance, tenant, "POST /commands/retry-messages", ids,
                    manager.retry_messages)
    if json_output:
        print_json(answer)
    else:
        out(f"retried: {answer['retried']}")
        if answer["not_found"]:
            out(f"not found: {', '.join(answer['not_found'])}")
        for item in answer["not_retryable"]:
            out(f"not retryable: {item['id']} ({item['reason']})")
    _all_done(answer["not_found"] or answer["not_retryable"], "retried")


def _write(instance: str | None, tenant: str, endpoint: str, ids: list[str],
           call: Any) -> dict[str, Any]:
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.cli.worker import wake

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            return 200, await call(s.core, tenant, ids)

        return await logged(s, endpoint, tenant, {"tenant_id": tenant, "ids": ids}, action)

    answer: dict[str, Any] = with_core(instance, run)
    if answer.get("retried"):
        wake(instance, tenant)
    return answer
