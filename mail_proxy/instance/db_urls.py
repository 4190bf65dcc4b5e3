"""Database URLs in an instance's configuration: checked before they are stored, and shown
without their password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mail_proxy.errors import ConfigurationError
from mail_proxy.store import redact_url  # also for URLs that do not parse


def split_password(url: str) -> tuple[str, str | None]:
    """(url without its password, password or None). libpq and asyncpg also take the
    password as a ``password=`` query parameter: it is moved out the same way, so that
    config.toml never holds it and no command shows it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = [value for key, value in query if key.lower() == "password"]
    if any(key.lower() == "sslpassword" for key, _ in query):
        raise ConfigurationError(
            f"database URL '{redact_url(url)}': an sslpassword would be stored in clear in "
            "config.toml", hint="use a client key without a passphrase, readable only by "
                                "the instance's user")
    if len(in_query) > 1 or (in_query and parts.password is not None):
        raise ConfigurationError(f"database URL '{redact_url(url)}' gives its password twice",
                                 hint="keep only one")
    if parts.password is None and not in_query:
        return url, None
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    kept = (urlencode([(k, v) for k, v in query if k.lower() != "password"]) if in_query
            else parts.query)
    password = parts.password if parts.password is not None else in_query[0]
    return urlunsplit(parts._replace(netloc=netloc, query=kept)), password


def _check_pg_url(url: str) -> None:
    """Refuse a URL that urllib cannot take apart; its ValueError would surface later as
    "unexpected ValueError" (split_password reads the port and the host)."""
    reason = None
    try:
        parts = urlsplit(url)
    except ValueError:
        reason = "the host part is malformed"
    else:
        try:
            parts.port  # noqa: B018 - reading it is the check
        except ValueError:
            reason = "the port must be a number 0-65535"
    if reason:
        raise ConfigurationError(f"invalid database URL '{redact_url(url)}': {reason}",
                                 hint="use postgresql://user@host:5432/dbname")


def check_db_url(url: str) -> str:
    if url.startswith("sqlite://"):
        if not url.startswith("sqlite:///"):
            raise ConfigurationError(f"invalid SQLite URL '{url}': use sqlite:/// followed by "
                                     "an absolute path")
        return url
    if url.startswith(("postgresql://", "postgres://")):
        _check_pg_url(url)
        return url
    raise ConfigurationError(f"unsupported database URL '{redact_url(url)}': use sqlite:///PATH "
                             "or postgresql://user@host:5432/dbname")
