"""Named SQL loaded from ``sql/<backend>/queries/*.sql``.

Each query starts with a line ``-- name: <query_name>``; the text up to the next such line is
its SQL. Names must be unique across the files of a backend.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_ROOT = Path(__file__).parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.M)


def parse(text: str, source: str = "<sql>") -> dict[str, str]:
    out: dict[str, str] = {}
    parts = _NAME.split(text)
    for i in range(1, len(parts), 2):
        name, body = parts[i], parts[i + 1].strip().rstrip(";").strip()
        if name in out:
            raise ValueError(f"query {name!r} defined twice ({source})")
        out[name] = body
    return out


@cache
def load(backend: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((SQL_ROOT / backend / "queries").glob("*.sql")):
        for name, sql in parse(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise ValueError(f"query {name!r} defined twice ({backend})")
            queries[name] = sql
    return queries


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    out = []
    for path in sorted((SQL_ROOT / backend / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version = int(path.name[:4])
        out.append((version, path.stem[5:], path.read_text(encoding="utf-8")))
    return out
