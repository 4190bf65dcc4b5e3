"""Global commands that manage instances: list, start, stop, restart, status, delete, logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import (
    EXIT_INSTANCE,
    EXIT_OK,
    err,
    instance_or_context,
    out,
    print_json,
)

NameArg = Annotated[str, typer.Argument(help="Instance name.", show_default=False)]
OptName = Annotated[str | None, typer.Argument(help="Instance name (default: the context).",
                                               show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=0, help="Seconds to wait for the drain (default: shutdown_timeout + 15).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Kill when the drain does not finish.")]
WaitOpt = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for GET /health.")]


def _list(json_output: JsonOpt = False) -> None:
    """Table of instances and their state."""
    from mail_proxy.cli.listing import show_list

    show_list(json_output)


def _start(name: NameArg,
           host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
           port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
           db: Annotated[str | None, typer.Option("--db", help="Database URL (new only).")] = None,
           foreground: Annotated[bool, typer.Option(help="Run the supervisor here.")] = False,
           wait: WaitOpt = 15.0,
           key_file: Annotated[Path | None, typer.Option(
               "--key-file", help="Key ring of a shared database (new only).")] = None) -> int:
    """Create (when new) and start an instance under its supervisor."""
    from mail_proxy.instance import control

    return control.start(name, host=host, port=port, db=db, wait=wait, foreground=foreground,
                         key_file=key_file, out=out, err=err)


def _stop(name: OptName = None,
          all_: Annotated[bool, typer.Option("--all", help="Stop every running instance.")] = False,
          timeout: TimeoutOpt = None, force: ForceOpt = False) -> int:
    """Drain and stop an instance (or all of them)."""
    from mail_proxy.cli.application import abort
    from mail_proxy.instance import stopping

    if all_:
        if name:
            abort("give an instance name or --all, not both", 2)
        return stopping.stop_all(timeout=timeout, force=force, out=out, err=err)
    return stopping.stop(instance_or_context(name), timeout=timeout, force=force, out=out,
                         err=err)


def _restart(name: OptName = None, timeout: TimeoutOpt = None, force: ForceOpt = False,
             wait: WaitOpt = 15.0) -> int:
    """Stop, then start with the stored configuration."""
    from mail_proxy.instance import control

    return control.restart(instance_or_context(name), timeout=timeout, force=force,
                           wait=wait, out=out, err=err)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "-"
    from mail_proxy.instance.states import DATABASE_UNREACHABLE_EXIT

    return f"{code} (database unreachable)" if code == DATABASE_UNREACHABLE_EXIT else str(code)


def _status_lines(doc: dict[str, Any]) -> list[str]:
    from mail_proxy.cli.application import duration

    state = doc["state"] + (" (stale record: the supervisor is gone)" if doc["stale"] else "")
    lines = [f"instance:     {doc['name']}", f"state:        {state}",
             f"url:          {doc['url']}", f"database:     {doc['database']}",
             f"supervisor:   {doc['supervisor_pid'] or '-'}",
             f"worker:       {doc['worker_pid'] or '-'}",
             f"uptime:       {duration(doc['uptime_seconds'])}",
             f"restarts:     {doc['restarts']}",
             f"last exit:    {_exit_text(doc['last_exit_code'])}",
             f"version:      {doc['version']}"]
    server = doc.get("server")
    if server:
        from mail_proxy.cli.dataview import cell

        active = server.get("active", "-")
        lines.append(f"server:       {server.get('state', '-')}, active: "
                     f"{cell(active) if isinstance(active, bool) else active}")
    counts = doc.get("messages")
    if counts is not None:
        text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        lines.append(f"messages:     {text}")
    elif doc.get("messages_error"):
        lines.append(f"messages:     unavailable ({doc['messages_error']})")
    return lines


def _status(name: OptName = None, json_output: JsonOpt = False) -> int:
    """State, pids and restarts (exit 0 when RUNNING, else 3)."""
    from mail_proxy.instance.overview import status

    doc = status(instance_or_context(name))
    if json_output:
        print_json(doc)
    else:
        for line in _status_lines(doc):
            out(line)
    return EXIT_OK if doc["state"] == "RUNNING" else EXIT_INSTANCE


def _delete(name: NameArg,
            force: Annotated[bool, typer.Option(
                "--force", help="Stop it first if running; no confirmation.")] = False) -> int:
    """Remove an instance folder (not its PostgreSQL database)."""
    from mail_proxy.cli.application import interactive

    confirm = None
    if interactive():
        from mail_proxy.cli.prompts import confirm_by_typing

        confirm = confirm_by_typing
    from mail_proxy.instance import removal

    return removal.delete(name, force=force, confirm=confirm, out=out, err=err)


def _logs(name: OptName = None,
          follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep following.")] = False,
          lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="Lines to show.")] = 100,
          supervisor: Annotated[bool, typer.Option(
              "--supervisor", help="Show supervisor.log instead of mail-proxy.log.")] = False,
          ) -> None:
    """Print the end of the instance log; -f follows it."""
    from mail_proxy.instance import paths
    from mail_proxy.instance.logs import follow as follow_lines
    from mail_proxy.instance.logs import log_path, tail

    folder = paths.existing_instance(instance_or_context(name))
    path = log_path(folder, supervisor=supervisor)
    if not path.exists() and not follow:
        err(f"no log yet at {path}")
        return
    for line in tail(path, lines):
        out(line)
    if follow:
        for line in follow_lines(path):
            out(line)


def register(app: typer.Typer) -> None:
    app.command("list")(_list)
    app.command("start")(_start)
    app.command("stop")(_stop)
    app.command("restart")(_restart)
    app.command("status")(_status)
    app.command("delete")(_delete)
    app.command("logs")(_logs)
