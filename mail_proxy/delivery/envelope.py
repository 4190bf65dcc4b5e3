"""The SMTP envelope of a message (messages.md §4.3) and the address helpers MIME shares.

Addresses arrive already validated and normalised (``Name <local@domain>`` or
``local@domain``); what is left is to pick the envelope sender, de-duplicate recipients and
turn internationalised domains into their ASCII (IDNA) form, because the transaction is
never run with SMTPUTF8.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from mail_proxy.idn import to_ascii


def ascii_domain(domain: str) -> str:
    """The A-label form of ``domain``; ASCII domains are returned unchanged."""
    return to_ascii(domain)  # validation already accepted the domain, so it converts


# The two normal forms validation stores: ``Name <local@domain>`` (the name possibly quoted)
# and ``local@domain``. Matching them directly is ~20x cheaper than the general parser,
# which stays as the fallback for anything else.
_NORMAL = re.compile(r'^(?:(?P<name>[^"<>]*?|"(?P<quoted>(?:[^"\\]|\\.)*)")\s*'
                     r'<(?P<spec>[^<>\s"]+@[^<>\s"@]+)>|(?P<bare>[^<>\s"@]+@[^<>\s"@]+))$')
_UNESCAPE = re.compile(r"\\(.)")


@lru_cache(maxsize=4096)
def _parts(address: str) -> tuple[str, str, str]:
    """``(display name, local part, domain)`` of one normalised address."""
    address = address.strip()
    m = _NORMAL.match(address)
    if m is not None:
        if m["bare"]:
            name, spec = "", m["bare"]
        else:
            quoted = m["quoted"]
            name = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else m["name"].strip()
            spec = m["spec"]
        local, _, domain = spec.rpartition("@")
        return name, local, domain
    name, spec = parseaddr(address)
    if not spec:
        spec = address.strip()
    local, _, domain = spec.rpartition("@")
    if not local:
        local, domain = spec, ""
    return name, local, domain


def split_address(address: str) -> tuple[str, str]:
    """``(display name, addr-spec)`` of one normalised address, domain as written."""
    name, local, domain = _parts(address)
    return name, f"{local}@{domain}" if domain else local


def addr_spec(address: str) -> str:
    """The bare ``local@domain`` of an address, domain in ASCII form."""
    _, local, domain = _parts(address)
    return f"{local}@{ascii_domain(domain)}" if domain else local


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if v is not None and str(v).strip()]


def recipients(payload: Mapping[str, Any]) -> list[str]:
    """RCPT TO order: ``to``, ``cc``, ``bcc``; first occurrence wins, compared without case."""
    seen: set[str] = set()
    out: list[str] = []
    for field in ("to", "cc", "bcc"):
        for address in _as_list(payload.get(field)):
            spec = addr_spec(address)
            key = spec.lower()
            if key not in seen:
                seen.add(key)
                out.append(spec)
    return out


def envelope(payload: Mapping[str, Any], *,
             bounce_return_path: str | None = None) -> tuple[str, list[str]]:
    """``(MAIL FROM, RCPT TO list)`` of a normalised payload (messages.md §1.3).

    MAIL FROM is ``return_path``, else the configured bounce return path, else the
    addr-spec of ``from``. Suppression filtering is the dispatcher's job: it needs the
    tenant's list and records the removed recipients.
    """
    sender = payload.get("return_path") or bounce_return_path or payload.get("from") or ""
    return addr_spec(str(sender)) if sender else "", recipients(payload)


def unique_lower(addresses: Iterable[str]) -> set[str]:
    """Case-insensitive identity set, e.g. to match refused recipients against RCPT TO."""
    return {a.lower() for a in addresses}
