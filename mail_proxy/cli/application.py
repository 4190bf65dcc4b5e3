"""Shared CLI context and the one error policy at the edge (cli.md §8).

Every command runs inside :func:`guarded`: expected failures become ``error: <sentence>`` (and
maybe ``hint: …``) on stderr with a documented exit code; anything unexpected becomes one
line too, and a traceback (without local variables: they hold secrets) only when
``MAIL_PROXY_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INSTANCE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def help_settings() -> dict[str, Any]:
    """``context_settings`` of the three apps: ``-h`` works as ``--help`` everywhere (the
    sub-commands' contexts inherit it from the app's root context)."""
    return {"help_option_names": ["-h", "--help"]}


class CliExit(Exception):
    """Leave the command with ``code``, after printing ``message`` (and ``hint``) if given."""

    def __init__(self, code: int, message: str | None = None, hint: str | None = None) -> None:
        super().__init__(message or "")
        self.code, self.message, self.hint = code, message, hint


@dataclass
class AppContext:
    """What the grammar resolved before typer parsed the rest (stored as ``ctx.obj``)."""

    instance: str | None = None
    tenant: str | None = None
    instance_source: str | None = None
    tenant_source: str | None = None


def out(line: str = "") -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def abort(message: str, code: int = EXIT_FAILED, hint: str | None = None) -> NoReturn:
    raise CliExit(code, message, hint)


def not_implemented() -> NoReturn:
    abort("not implemented yet")


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def print_error(message: str, hint: str | None = None) -> None:
    err(f"error: {message}")
    if hint:
        err(f"hint: {hint}")


def exit_code_for(exc: BaseException) -> int:
    from mail_proxy.errors import ConfigurationError, InstanceError

    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, InstanceError):
        return EXIT_INSTANCE
    return EXIT_FAILED


def _debug() -> bool:
    return os.environ.get("MAIL_PROXY_DEBUG") == "1"


def guarded(body: Callable[[], Any]) -> int:
    """Run ``body`` under the error policy and a private umask; return the exit code.

    Files a command creates are owner-only (cli.md §2: SQLite creates the database and its
    -wal/-shm from the umask, also where --db or GMP_DB_PATH put them outside the 0700
    instance folder), as they are under the supervisor (umask 077, cli.md §9.1). The
    umask is restored afterwards: tests and embedders run commands in their own process.
    """
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    try:
        return _guarded(body)
    finally:
        os.umask(previous)


def _guarded(body: Callable[[], Any]) -> int:
    from mail_proxy.errors import MailProxyError

    try:
        result = body()
        return result if isinstance(result, int) else EXIT_OK
    except CliExit as exc:
        if exc.message:
            print_error(exc.message, exc.hint)
        return exc.code
    except KeyboardInterrupt:
        err("")
        return EXIT_INTERRUPTED
    except MailProxyError as exc:
        if _debug():
            _traceback(exc)
        print_error(exc.message, exc.hint)
        return exit_code_for(exc)
    except BrokenPipeError:
        # the reader went away (`mail-proxy logs x | head`): not an error worth a message
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return EXIT_OK
    except Exception as exc:
        typer = sys.modules.get("typer")  # typer's errors can only come once it is loaded
        if typer is not None:
            if isinstance(exc, typer.Exit):
                return exc.exit_code
            if isinstance(exc, typer.Abort):
                err("")
                return EXIT_INTERRUPTED
            if isinstance(exc, typer.TyperException):
                return _usage_error(exc)
        if _debug():
            _traceback(exc)
        print_error(f"unexpected {type(exc).__name__}",
                    "run again with MAIL_PROXY_DEBUG=1 to see the traceback")
        return EXIT_FAILED


def _usage_error(exc: Exception) -> int:
    """Typer's parsing errors (its click fork is private, so duck-typed): exit 2 with a hint."""
    code = int(getattr(exc, "exit_code", EXIT_FAILED))
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        text = ctx.get_help()  # rich help prints itself and returns ""; plain help is returned
        if text:
            out(text)
        return EXIT_USAGE
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    hint = f"{ctx.command_path} --help" if ctx is not None and code == EXIT_USAGE else None
    print_error(message.strip().rstrip("."), hint)
    return code


def _traceback(exc: BaseException) -> None:
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


class _InstanceNames(Collection[str]):
    """The instance folders, listed on first use: a global command (``start``, ``--help``)
    must not fail because MAIL_PROXY_HOME cannot be listed; the grammar asks only when the
    first word is not a global command."""

    def __init__(self) -> None:
        self._names: frozenset[str] | None = None

    def _get(self) -> frozenset[str]:
        if self._names is None:
            from mail_proxy.instance import paths

            self._names = frozenset(paths.instance_names())
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def disk_world() -> Any:
    """The grammar's view of this machine: instance folders, environment and ``.current``.

    Its tenant lookup raises the error the instance's own commands would (unreadable
    database, shared folder): "tenant not found" about a tenant that exists misleads.
    Completion uses this world too and stays silent on those errors.
    """
    from mail_proxy.cli.grammar import World
    from mail_proxy.instance import paths

    def tenants(instance: str) -> list[str]:
        from mail_proxy.instance.lookup import checked_tenant_ids

        return checked_tenant_ids(instance)

    return World(instances=_InstanceNames(), env=dict(os.environ),
                 current=paths.read_current(), tenant_ids=tenants)


def instance_or_context(name: str | None) -> str:
    """``name``, else the context instance (with the ``(main)`` notice), else exit 3."""
    if name:
        return name
    from mail_proxy.cli.grammar import context_instance

    instance, source = context_instance(disk_world())
    if instance is None:
        abort("no instance given and no context set", EXIT_INSTANCE,
              "name the instance, or run `mail-proxy use NAME`")
    err(f"({instance})")
    assert source is not None
    return instance


def table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tab = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        tab.add_column(column, overflow="fold")
    for row in rows:
        # Text, not markup: cells hold what clients and SMTP servers wrote ("[/]" in a
        # subject crashed the listing, "[b]" vanished from it)
        tab.add_row(*(Text(value) for value in row))
    # a pipe or file gets whole lines: wrapping at 80 columns would break grep and awk
    Console(width=None if sys.stdout.isatty() else 1000).print(tab)


def print_json(document: Any) -> None:
    import json

    out(json.dumps(document, indent=2, sort_keys=False))


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rem = divmod(int(seconds), 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"
