"""Small output helpers shared by the data commands: times, cells, secrets from stdin, ages.

Tables go through :func:`mail_proxy.cli.application.table` (rich, one style everywhere);
``--json`` documents through :func:`print_json`. This module only shapes cell values.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from typing import Any

from mail_proxy.cli.application import EXIT_USAGE, CliExit, interactive

_AGE = re.compile(r"(\d+)\s*([smhdw])")  # fullmatch: "$" would allow a final "\n"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def local_time(epoch: int | float | None) -> str:
    """``2026-01-31 14:02:11`` in local time (cli.md §8); ``-`` for no value."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_when(text: str | None, flag: str, *, now: float | None = None) -> int | None:
    """Epoch seconds, an ISO 8601 date/time (local time when naive), or an age ``30d``."""
    if text is None or text == "":
        return None
    raw = text.strip()
    stamp = time.time() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return int(float(raw))
    match = _AGE.fullmatch(raw)
    if match:
        return int(stamp - int(match.group(1)) * _UNITS[match.group(2)])
    try:
        return int(datetime.fromisoformat(raw).timestamp())
    except ValueError:
        raise CliExit(EXIT_USAGE, f"{flag}: '{text}' is not a time",
                      "use epoch seconds, an ISO date such as 2026-01-31T14:00, "
                      "or an age such as 30d, 12h, 15m") from None


def parse_duration(text: str, flag: str) -> int:
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise CliExit(EXIT_USAGE, f"{flag}: '{text}' is not a duration",
                      "use a number with a unit: 90d, 12h, 30m")
    return int(match.group(1)) * _UNITS[match.group(2)]


def secret_value(value: str | None, flag: str) -> str | None:
    """A secret flag's value; ``-`` reads it from stdin (cli.md §6): one line from a pipe,
    or typed without echo on a terminal (§7: secrets are never echoed).

    Nothing read is a usage error: an empty secret was stored silently before, which an
    account or a setting then used as if it were the password.
    """
    if value != "-":
        return value
    if sys.stdin.isatty():
        secret, source = _typed_secret(flag), "nothing typed"
    else:
        secret, source = sys.stdin.readline().rstrip("\r\n"), "nothing on stdin"
    if not secret:
        raise CliExit(EXIT_USAGE, f"{flag} -: {source}")
    return secret


def _typed_secret(flag: str) -> str:
    import getpass

    from mail_proxy.cli.prompts import interrupted

    try:
        return getpass.getpass(f"{flag} (input hidden): ")
    except EOFError:  # Ctrl-D at the prompt
        print(file=sys.stderr)  # the prompt's line is still open
        return ""
    except KeyboardInterrupt:
        interrupted()
        raise


def one_of(value: str | None, flag: str, choices: tuple[str, ...]) -> None:
    """A word flag outside its closed set is a malformed value: exit 2 (cli.md §8), checked
    before anything is read or written, as ``--since yesterday`` is. (The manager's own
    check would answer exit 1, "validation refused", which scripts read as a refused
    operation; docs/decisions/cli.md, 2026-11-24.)"""
    if value is not None and value not in choices:
        raise CliExit(EXIT_USAGE, f"{flag}: '{value}' is not one of {', '.join(choices)}")


def checked_cursor(cursor: str | None, decode: Any) -> str | None:
    """``--cursor`` must be a ``next_cursor`` of the same list: one that ``decode`` (the
    manager's decoder) refuses is a malformed value, exit 2."""
    from mail_proxy.errors import MailProxyError

    if cursor:
        try:
            decode(cursor)
        except MailProxyError:
            raise CliExit(EXIT_USAGE, f"--cursor: '{cursor}' is not a cursor of this list",
                          "pass the next_cursor printed by the previous page") from None
    return cursor


def can_prompt(no_input: bool) -> bool:
    return interactive() and not no_input


def missing(flag: str) -> CliExit:
    # with --no-input on a terminal, "no terminal to ask" was wrong (CLI hunt)
    why = "--no-input" if interactive() else "no terminal to ask"
    return CliExit(EXIT_USAGE, f"missing value for {flag} ({why}; pass {flag})")


def limits(m: Any, h: Any, d: Any) -> str:
    return "/".join("-" if v in (None, 0) else str(v) for v in (m, h, d))


def flat(value: Any) -> str:
    """One cell for a nested value: compact JSON for objects and lists."""
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(", ", ": "))
    return cell(value)


def record_table(pairs: list[tuple[str, str]]) -> None:
    """A two-column ``field  value`` listing for ``show`` commands (no header)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tab = Table(box=None, pad_edge=False, show_header=False)
    tab.add_column(style="bold")
    tab.add_column(overflow="fold")
    for key, value in pairs:
        tab.add_row(Text(key), Text(value))  # literal text, never markup (see table())
    Console(width=None if sys.stdout.isatty() else 1000).print(tab)


def record_pairs(doc: dict[str, Any], times: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(key, local_time(value) if key in times and value is not None else flat(value))
            for key, value in doc.items()]
