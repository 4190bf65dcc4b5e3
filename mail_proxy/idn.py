"""Internationalised domain names: one conversion for validation, the envelope, MIME and
the suppression lists.

Two conversions used to coexist (the stdlib's IDNA 2003 codec in validation, UTS #46 in the
envelope) and disagree: "straße.example" became "strasse.example" in a return path and
"xn--strae-oqa.example" in the recipients of the same message, two different registrable
domains (Postfix interop hunt, 2026-11-25).
"""

from __future__ import annotations

from functools import lru_cache

import idna


@lru_cache(maxsize=4096)
def to_ascii(domain: str) -> str:
    """The A-label form of ``domain`` (ASCII domains unchanged); ``UnicodeError`` when it
    has none.

    UTS #46 mapping first: it accepts the mixed-case and full-width input users type, and
    keeps "ß" and "ς" as IDNA 2008 does. The stdlib codec (IDNA 2003) is the fallback for
    the few symbols IDNA 2008 refuses and older registrations still use.
    """
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain.encode("idna").decode("ascii")


@lru_cache(maxsize=4096)
def to_unicode(domain: str) -> str:
    """The U-label form of a domain, lower-cased: what suppression entries are keyed on, so
    that "a@BÜCHER.example", "a@bücher.example" and "a@xn--bcher-kva.example" are one
    address. A domain that does not convert is returned lower-cased as given."""
    lowered = domain.lower()
    if lowered.isascii() and "xn--" not in lowered:
        return lowered
    try:
        return idna.decode(to_ascii(lowered), uts46=True).lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return lowered


def address_forms(address: str) -> tuple[str, str]:
    """(key, A-label form) of a bare address, both lower-cased: the key is how a suppression
    entry is stored; the A-label form finds entries stored that way before."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return domain, domain
    key = f"{local}@{to_unicode(domain)}"
    try:
        ascii_form = f"{local}@{to_ascii(to_unicode(domain)).lower()}"
    except (UnicodeError, ValueError):
        ascii_form = key
    return key, ascii_form
