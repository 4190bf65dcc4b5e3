"""E-mail address lists as clients write them, checked strictly (messages.md §2.1).

``email.utils.getaddresses`` guesses its way through garbage, and a proxy that guesses ends up
sending to addresses nobody meant. This parser accepts RFC 5322 address lists (quoted display
names, commas inside quotes or comments) and refuses what cannot be delivered as written:
groups, domain literals, non-ASCII local parts, over-long parts, malformed domains.

The normal form keeps the domain as the client wrote it; :func:`addr_spec` gives the
envelope form with the domain converted to IDNA.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn

from mail_proxy.encoded_words import hides_line_break
from mail_proxy.errors import RejectedMessage
from mail_proxy.idn import to_ascii

__all__ = ["Address", "AddressError", "addr_spec", "address_field", "address_list_field",
           "idna_domain", "json_type", "parse_address", "parse_address_list", "parse_addresses",
           "quote", "split_addresses"]

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Quoted-string content: printable ASCII except '"' and '\', or a backslash pair.
_QCONTENT = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*')
# Everything that may not appear in an address at all (CR/LF would allow header injection).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# Characters that force a display name into quotes in the normal form.
_NAME_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]|[^\S ]|^\s|\s$|\s\s')
# Characters an unquoted display name may not contain; parentheses and "@" are kept as text
# because generated names ("ann@x.test <ann@x.test>") are common and unambiguous.
_PHRASE_FORBIDDEN = frozenset('<>;:\\"[],')
# Fast path: without these characters a comma always separates two addresses.
_COMPLEX = re.compile(r'["():;\\\[\]]')
_ANGLE = re.compile(r"([^<>]*)<([^<>]*)>")
_PLAIN_SPEC = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)")
_BLANKS = re.compile(r"[ \t]+")
MAX_DISPLAY_NAME = 256


class AddressError(ValueError):
    """One address could not be used; ``text`` is the offending piece as written."""

    def __init__(self, text: str, detail: str | None = None, index: int | None = None) -> None:
        super().__init__(f"{text!r} is not a valid e-mail address")
        self.text = text
        self.detail = detail
        self.index = index  # position in the JSON array the piece came from, if any


class Address(NamedTuple):  # a tuple: cheap to build, immutable, safe to cache
    display_name: str | None
    local: str
    domain: str        # as written, Unicode allowed
    ascii_domain: str  # IDNA form used on the envelope

    @property
    def normalised(self) -> str:
        spec = f"{self.local}@{self.domain}"
        if not self.display_name:
            return spec
        return f"{_render_name(self.display_name)} <{spec}>"

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.ascii_domain}"


def _render_name(name: str) -> str:
    if _NAME_SPECIALS.search(name) is None:
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@lru_cache(maxsize=4096)
def idna_domain(domain: str) -> str | None:
    """IDNA (ASCII) form of a host name, or None when it is not a usable one."""
    if not domain or len(domain) > 253:
        return None
    if not domain.isascii():
        try:
            # the conversion the envelope uses: a return path and the recipients of one
            # message must name the same domains (mail_proxy/idn.py)
            domain = to_ascii(domain)
        except (UnicodeError, ValueError):
            return None
    labels = domain.split(".")
    if any(_LABEL.fullmatch(label) is None for label in labels):
        return None
    return domain if len(domain) <= 253 else None


def _spec(spec: str, original: str) -> tuple[str, str, str]:
    """Split and check an addr-spec; returns (local, domain, ascii_domain)."""
    at = spec.rfind("@")
    if at <= 0:
        raise AddressError(original)
    local, domain = spec[:at], spec[at + 1:]
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"') or \
                _QCONTENT.fullmatch(local, 1, len(local) - 1) is None:
            raise AddressError(original)
        if "<" in local or ">" in local:
            # legal inside quotes, but a relay that reads "<...>" naively would take the rest
            # of RCPT TO:<"x> NOTIFY=NEVER"@y> as ESMTP parameters; no real mailbox needs it
            raise AddressError(original, "a quoted local part may not contain '<' or '>'")
    elif _DOT_ATOM.fullmatch(local) is None:
        raise AddressError(original)
    if len(local) > 64:
        raise AddressError(original, "the local part is longer than 64 characters")
    if domain.startswith("["):
        raise AddressError(original, "domain literals are not accepted")
    ascii_domain = idna_domain(domain)
    if ascii_domain is None:
        detail = "the domain is longer than 253 characters" if len(domain) > 253 else None
        raise AddressError(original, detail)
    return local, domain, ascii_domain


def _scan(text: str, i: int, closer: str) -> int:
    """Index just past the quoted string (closer '"') or comment (')') opened at ``text[i]``."""
    depth = 0
    n = len(text)
    j = i + 1
    if closer == ")":
        depth = 1
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if closer == '"':
            if c == '"':
                return j + 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise AddressError(text.strip(), "unbalanced quotes or parentheses")


def _split(text: str) -> list[str]:
    """Split an address list at commas that are outside quotes, comments and brackets."""
    parts: list[str] = []
    start = i = 0
    n = len(text)
    angle = False
    while i < n:
        c = text[i]
        if c == '"':
            i = _scan(text, i, '"')
            continue
        if c == "(":
            i = _scan(text, i, ")")
            continue
        if c == "<":
            if angle:
                raise AddressError(text[start:].strip())
            angle = True
        elif c == ">":
            if not angle:
                raise AddressError(text[start:].strip())
            angle = False
        elif not angle and c in ":;":
            piece = text[start:].split(",")[0].strip() if c == ";" else text[start:].strip()
            raise AddressError(piece, "groups are not accepted")
        elif c == "," and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if angle:
        raise AddressError(text[start:].strip())
    parts.append(text[start:])
    return parts


def _phrase(raw: str, original: str) -> str | None:
    """Decode a display name: quoted strings unescaped, whitespace runs collapsed."""
    words: list[str] = []
    i, n = 0, len(raw)
    buf: list[str] = []
    while i < n:
        c = raw[i]
        if c == '"':
            end = _scan(raw, i, '"')
            inner = raw[i + 1:end - 1]
            buf.append(re.sub(r"\\(.)", r"\1", inner))
            i = end
            continue
        if c == "(":
            end = _scan(raw, i, ")")
            buf.append(raw[i:end])
            i = end
            continue
        if c in " \t":
            if buf:
                words.append("".join(buf))
                buf = []
        elif c in _PHRASE_FORBIDDEN:
            raise AddressError(original)
        else:
            buf.append(c)
        i += 1
    if buf:
        words.append("".join(buf))
    return " ".join(words).strip() or None


def _mailbox(piece: str) -> Address:
    text = piece.strip(" \t")
    lt = _find_angle(text)
    if lt < 0:
        local, domain, ascii_domain = _spec(text, text)
        return Address(None, local, domain, ascii_domain)
    if not text.endswith(">"):
        raise AddressError(text)
    name = _phrase(text[:lt], text)
    local, domain, ascii_domain = _spec(text[lt + 1:-1], text)
    return Address(name, local, domain, ascii_domain)


def _plain_mailbox(piece: str) -> Address:
    """``_mailbox`` for text without quotes, comments or brackets (the common case)."""
    text = piece.strip(" \t")
    if "<" not in text:
        plain = _PLAIN_SPEC.fullmatch(text)
        if plain is not None and len(plain[1]) <= 64:
            ascii_domain = idna_domain(plain[2])
            if ascii_domain is not None:
                return Address(None, plain[1], plain[2], ascii_domain)
        # Not the everyday form: let the full check find the problem and name it.
        local, domain, ascii_domain = _spec(text, text)
        return Address(None, local, domain, ascii_domain)
    found = _ANGLE.fullmatch(text)
    if found is None:
        raise AddressError(text)
    name = _BLANKS.sub(" ", found[1]).strip() or None
    local, domain, ascii_domain = _spec(found[2], text)
    return Address(name, local, domain, ascii_domain)


def _find_angle(text: str) -> int:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _scan(text, i, '"')
            continue
        if c == "(":
            i = _scan(text, i, ")")
            continue
        if c == "<":
            return i
        i += 1
    return -1


def _parse_list(text: str) -> tuple[Address, ...]:
    if _CONTROL.search(text) is not None:
        raise AddressError(text.strip(), "control characters are not allowed")
    if hides_line_break(text):  # the email package would decode it into the header
        raise AddressError(text.strip(), "an encoded word (RFC 2047) in it decodes to CR, LF "
                           "or a control character")
    if _COMPLEX.search(text) is None:
        # Most lists are plain ("a@x, Name <b@y>"): no character scanner needed.
        if "," not in text:  # one address, the commonest of all: no generator either
            found: tuple[Address, ...] = (_plain_mailbox(text),) if text.strip(" \t") else ()
        else:
            found = tuple(_plain_mailbox(p) for p in text.split(",") if p.strip(" \t"))
    else:
        found = tuple(_mailbox(p) for p in _split(text) if p.strip(" \t"))
    for address in found:
        if "=?" in address.local:  # the email package cannot write such an addr-spec
            raise AddressError(text.strip(), "an encoded word (RFC 2047) may not stand for "
                               "the local part")
        if address.display_name and len(address.display_name) > MAX_DISPLAY_NAME:
            # no header line may pass 998 octets, and a long name is not folded
            raise AddressError(text.strip(), f"the display name is longer than "
                               f"{MAX_DISPLAY_NAME} characters")
    return found


# A batch usually repeats its sender and copy addresses; failures are never cached.
_parse_short = lru_cache(maxsize=8192)(_parse_list)


def _parsed(text: str) -> tuple[Address, ...]:
    return _parse_short(text) if len(text) <= 320 else _parse_list(text)


def parse_address_list(text: str) -> list[Address]:
    """Parse an RFC 5322 address list; empty elements (``"a@x, , b@x"``) are skipped."""
    return list(_parsed(text))


def parse_address(text: str) -> Address:
    """Parse a string holding exactly one address."""
    found = _parsed(text)
    if len(found) != 1:
        detail = "exactly one address is required" if found else None
        raise AddressError(text.strip(), detail)
    return found[0]


def parse_addresses(value: object) -> list[Address]:
    """Addresses of a JSON value: a string (may hold several) or an array of such strings."""
    if isinstance(value, str):
        return parse_address_list(value)
    if not isinstance(value, list):
        raise AddressError(str(value), "must be a string or an array of strings")
    out: list[Address] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise AddressError(str(item), "must be a string", index)
        try:
            out.extend(parse_address_list(item))
        except AddressError as exc:
            exc.index = index
            raise
    return out


def split_addresses(value: object) -> list[str]:
    """Normal forms of every address in a string with commas or an array of strings."""
    return [a.normalised for a in parse_addresses(value)]


def addr_spec(normalised: str) -> str:
    """Bare address with the domain in IDNA form, e.g. for MAIL FROM / RCPT TO."""
    return parse_address(normalised).addr_spec


# Message fields holding addresses (messages.md §2 checks 6, 7 and 11): these raise the
# RejectedMessage of the field, with the JSON path of the bad piece ("to[1]").

def quote(value: object) -> str:
    """A value quoted for a reason sentence: short, control characters escaped."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an integer too long to print (int_max_str_digits)
        return json_type(value)
    return repr(text if len(text) <= 80 else text[:80] + "…")


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _reject(field: str, problem: str) -> NoReturn:
    raise RejectedMessage("invalid_address", f"'{field}': {problem}", field)


def _reject_address(field: str, exc: AddressError) -> NoReturn:
    extra = f" ({exc.detail})" if exc.detail else ""
    _reject(field, f"{quote(exc.text)} is not a valid e-mail address{extra}")


def address_list_field(entry: dict[str, Any], name: str) -> list[Address]:
    """Addresses of ``entry[name]`` (string or array of strings); [] when absent."""
    value = entry.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return list(_parsed(value))
        except AddressError as exc:
            _reject_address(name, exc)
    if not isinstance(value, list):
        _reject(name, f"must be a string or an array of strings, not {json_type(value)}")
    out: list[Address] = []
    for index, item in enumerate(value):
        # The field path ("to[1]") is only spelled out for a rejection: this runs for
        # every recipient of every message of a batch.
        if not isinstance(item, str):
            _reject(f"{name}[{index}]", f"must be a string, not {json_type(item)}")
        try:
            out += _parsed(item)
        except AddressError as exc:
            _reject_address(f"{name}[{index}]", exc)
    return out


def address_field(value: object, field: str) -> Address:
    """The single address of a field such as ``from`` or ``return_path``."""
    if not isinstance(value, str):
        _reject(field, f"must be a string, not {json_type(value)}")
    try:
        return parse_address(value)
    except AddressError as exc:
        _reject_address(field, exc)
