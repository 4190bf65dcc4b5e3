"""PostgreSQL statements from the shared ``:name`` query text, and parameters shaped for
the types PostgreSQL inferred (see ``postgres``'s docstring)."""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|::|:([A-Za-z_][A-Za-z0-9_]*)")
_INT_TYPES = {"int2", "int4", "int8", "oid"}
_TEXT_TYPES = {"text", "varchar", "bpchar", "name", "json", "jsonb"}


def convert(sql: str) -> tuple[str, list[str]]:
    """``:name`` placeholders → ``$n``; casts (``::int``), literals and comments untouched."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _TOKEN.sub(sub, sql), names


# "INSERT INTO t (cols) VALUES (...)" and nothing else, once converted to $n placeholders.
_PLAIN_INSERT = re.compile(r"(INSERT\s+INTO\s+\w+\s*\([\w\s,]+\))\s*VALUES\s*\(([^()]*)\)\s*;?",
                           re.I | re.S)
_POSITIONAL = re.compile(r"\$(\d+)")


def unnest_insert(sql: str, kinds: list[tuple[str, str]]) -> str | None:
    """The many-rows form of a plain single-row INSERT: one array per parameter, unnested
    into rows (``INSERT ... SELECT ... FROM unnest($1::text[], ...)``). asyncpg's
    ``executemany`` runs the statement once per row; this is one statement for the batch
    (the store's part of a 1,000-message enqueue: 40 -> 23 ms). None when not applicable:
    array parameters, function calls in the values, ON CONFLICT, RETURNING."""
    match = _PLAIN_INSERT.fullmatch(sql.strip())
    if match is None or not kinds or any(kind != "scalar" for _, kind in kinds):
        return None
    head, values = match.groups()
    arrays = ", ".join(f"${i}::{name}[]" for i, (name, _) in enumerate(kinds, 1))
    columns = ", ".join(f"p{i}" for i in range(1, len(kinds) + 1))
    row = _POSITIONAL.sub(r"u.p\1", values)
    # rows keep the batch's order, and so do the primary keys they are given (FIFO ties)
    return (f"{head} SELECT {row} FROM unnest({arrays}) WITH ORDINALITY AS u({columns}, n) "
            f"ORDER BY u.n")


def coerce(value: Any, kind: tuple[str, str]) -> Any:
    """One parameter, shaped for the type PostgreSQL expects (see the module docstring)."""
    if value is None:
        return None
    type_name, type_kind = kind
    if type_kind == "array":
        if isinstance(value, str):
            value = json.loads(value)
        return list(value)
    if type_name == "bool":
        return bool(value)
    if type_name in _INT_TYPES:
        return int(value)
    if type_name in _TEXT_TYPES:
        if isinstance(value, list | dict | tuple):
            return json.dumps(value)
        if not isinstance(value, str):
            return str(value)
    return value
