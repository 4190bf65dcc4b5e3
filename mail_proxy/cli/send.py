"""``mail-proxy NAME TENANT send FILE.eml…`` (cli.md §6.1).

Files become message objects (``cli.eml``) and are stored by ``manager.enqueue.add_messages``,
the code behind ``POST /commands/add-messages``, in chunks of ``max_batch_messages``: the
answer of each chunk is merged into one (``queued`` summed, ``rejected`` concatenated with
``index`` counted over all files in command-line order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, err, out, print_json

PROGRESS_OVER = 5  # more files than this: a progress bar instead of one line per file
EML_MAX_BYTES = 25 * 2**20  # the default max_request_bytes


def _read(paths: list[Path], options: dict[str, Any], new_id: bool
          ) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
    """(path, message or None, problem) per file, in order."""
    from mail_proxy.cli.eml import EmlError, parse_eml

    found: list[tuple[Path, dict[str, Any] | None, str | None]] = []
    for path in paths:
        try:
            message = parse_eml(_file_bytes(path), new_id=new_id)
        except OSError as exc:
            found.append((path, None, f"cannot read the file: {exc.strerror or exc}"))
            continue
        except EmlError as exc:
            found.append((path, None, str(exc)))
            continue
        if options.get("to"):
            message["to"] = list(options["to"])
            message.pop("cc", None)
            message.pop("bcc", None)
        for key in ("account_id", "priority", "batch_code"):
            if options.get(key) is not None:
                message[key] = options[key]
        found.append((path, message, None))
    return found


def _file_bytes(path: Path) -> bytes:
    """The file, if it is a regular one of at most EML_MAX_BYTES: /dev/zero or a FIFO read
    on for ever, and an 85 MB file took 770 MB of memory before the message was refused."""
    import stat

    from mail_proxy.cli.eml import EmlError

    with path.open("rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EmlError("not a regular file")
        data = fh.read(EML_MAX_BYTES + 1)
    if len(data) > EML_MAX_BYTES:
        raise EmlError(f"larger than {EML_MAX_BYTES // 2**20} MiB, more than one request to the "
                       "API may carry (max_request_bytes)")
    return data


async def _store(session: Any, tenant: str, messages: list[tuple[int, dict[str, Any]]],
                 advance: Any, progress: dict[str, int]
                 ) -> tuple[int, list[dict[str, Any]]]:
    """Queue ``(global index, message)`` pairs chunk by chunk; (queued, rejected entries).
    ``progress["queued"]`` counts what is committed so far, for an interrupt to report."""
    from mail_proxy.cli.database import logged
    from mail_proxy.manager.enqueue import AllRejected, add_messages

    size = session.core.settings.max_batch_messages
    queued, rejected = 0, []
    for start in range(0, len(messages), size):
        chunk = messages[start:start + size]
        body = {"tenant_id": tenant, "messages": [m for _, m in chunk]}

        async def action(body: dict[str, Any] = body) -> tuple[int, Any]:
            return 200, await add_messages(session.core, body, session.principal)

        try:
            answer = await logged(session, "POST /commands/add-messages", tenant, body, action)
        except AllRejected as exc:
            answer = {"ok": True, "queued": 0, "rejected": exc.rejected}
        queued += int(answer["queued"])
        progress["queued"] = queued
        for entry in answer["rejected"]:
            rejected.append({**entry, "index": chunk[int(entry["index"])][0]})
        advance(len(chunk))
    return queued, rejected


def send(ctx: typer.Context,
         files: Annotated[list[Path], typer.Argument(help=".eml files to queue.",
                                                     show_default=False)],
         account: Annotated[str | None, typer.Option("--account", help="Account id.")] = None,
         priority: Annotated[str | None, typer.Option(
             "--priority", help="0-3 or immediate, high, medium, low.")] = None,
         to: Annotated[list[str] | None, typer.Option(
             "--to", help="Recipient (repeatable); replaces To, Cc and Bcc.")] = None,
         batch: Annotated[str | None, typer.Option("--batch", help="Batch code.")] = None,
         new_id: Annotated[bool, typer.Option(
             "--new-id", help="A random id instead of the file's hash.")] = False,
         json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")]
         = False) -> int:
    """Queue .eml files as messages."""
    from mail_proxy.cli.database import Session, with_core
    from mail_proxy.cli.worker import wake

    obj: AppContext = ctx.obj
    assert obj.tenant is not None
    tenant = obj.tenant
    prio = _priority(priority)
    options = {"to": to, "account_id": account, "priority": prio, "batch_code": batch}
    parsed = _read(files, options, new_id)
    rejected: list[dict[str, Any]] = [
        {"index": i, "id": None, "code": "invalid_eml", "reason": problem}
        for i, (_path, message, problem) in enumerate(parsed) if message is None]
    pending = [(i, m) for i, (_p, m, _x) in enumerate(parsed) if m is not None]
    bar = _Bar(len(files)) if len(files) > PROGRESS_OVER and not json_output else None

    progress = {"queued": 0}

    async def run(s: Session) -> tuple[int, list[dict[str, Any]]]:
        return await _store(s, tenant, pending, bar.advance if bar else lambda n: None,
                            progress)

    try:
        queued, late = with_core(obj.instance, run) if pending else (0, [])
    except KeyboardInterrupt:
        # Whole chunks are committed as they go: say how far it got, so nobody has to
        # guess what a second run would send again.
        if bar:
            bar.close()
            bar = None
        err(f"interrupted: {progress['queued']} of {len(pending)} messages were queued "
            "before the interrupt (a batch being stored at that moment may be queued too: "
            f"mail-proxy {obj.instance} {tenant} messages list tells)")
        if progress["queued"]:
            wake(obj.instance, tenant)
        raise
    finally:
        if bar:
            bar.close()
    rejected = sorted(rejected + late, key=lambda r: r["index"])
    if queued:
        wake(obj.instance, tenant)
    if json_output:
        # the REST route's answer, including its all-rejected form (api.md §4.1, cli.md §8)
        print_json({"ok": True, "queued": queued, "rejected": rejected} if queued else
                   {"ok": False, "error": "no message was accepted", "code": "all_rejected",
                    "queued": 0, "rejected": rejected})
    else:
        _report(parsed, rejected, show_lines=bar is None)
    return 0 if not rejected else 1


def _priority(text: str | None) -> int | None:
    """``--priority`` as the API reads it; a word it does not know is a usage error (exit 2)
    here, not a rejection of every file (exit 1)."""
    from mail_proxy.cli.application import EXIT_USAGE, CliExit
    from mail_proxy.manager.priority import parse_priority

    try:
        return parse_priority(text)
    except ValueError:
        raise CliExit(EXIT_USAGE, f"--priority: '{text}' is not a priority",
                      "use 0-3 or immediate, high, medium, low") from None


def _report(parsed: list[tuple[Path, dict[str, Any] | None, str | None]],
            rejected: list[dict[str, Any]], *, show_lines: bool) -> None:
    refused = {r["index"]: r for r in rejected}
    if show_lines:
        for i, (path, message, _problem) in enumerate(parsed):
            if i in refused:
                out(f"rejected {path.name}: {refused[i]['reason']}")
            else:
                assert message is not None
                out(f"queued  {path.name}  {message['id']}")
        return
    for i, entry in sorted(refused.items()):
        out(f"rejected {parsed[i][0].name}: {entry['reason']}")
    out(f"{len(parsed) - len(refused)} queued, {len(refused)} rejected")


class _Bar:
    """A rich progress bar on stderr, so stdout keeps only the results."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task("queueing", total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()

