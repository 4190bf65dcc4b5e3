"""Database URLs in an instance's configuration: checked before they are stored, and shown
without their password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from mail_proxy.errors import ConfigurationError
from mail_proxy.store import redact_url as _shown_url  # also for URLs that do not parse


def split_password(url: str) -> tuple[str, str | None]:
    """(url without its password, password or None)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


def redact_url(url: str) -> str:
    try:
        stripped, _password = split_password(url)
    except ValueError:
        return "(unparseable URL)"
    return stripped


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
        raise ConfigurationError(f"invalid database URL '{_shown_url(url)}': {reason}",
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
