"""Field checks shared by the tenant, account and suppression bodies (api.md §1.3).

Bodies arrive as decoded JSON of any shape. Each check takes one value and returns its
normalised form or raises :class:`Bad`; :func:`read_body` runs the checks of every present
field and collects *all* failures, so a 422 answer lists every bad field at once.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from mail_proxy.errors import BadRequest, FieldError, Forbidden, ValidationFailed
from mail_proxy.settings import bound_text

Check = Callable[[Any], Any]
INT64_MAX = 2**63 - 1
MAX_EPOCH = 2**40  # about year 36 800: far beyond any real timestamp, well inside int64
# Always used with fullmatch: ``re.match`` with ``$`` also matches before a final "\n", which
# once stored the tenant id "acme\n" beside "acme" and SMTP hosts ending in a newline.
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_URL = re.compile(r"https?://[^\s/?#@]+(:\d{1,5})?([/?#]\S*)?", re.IGNORECASE)
_ADDR = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+\.?[^\s@<>()\[\],;:\"]*")
# C0, DEL, C1 and the Unicode line and paragraph separators: what message ids refuse
# (validation.CONTROL).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Numbers in query strings: ASCII only (str.isdigit() also takes "²" and "２", which int()
# then refuses or reads), and no longer than an int64 so int() never sees 4,300 digits.
_QUERY_INT = re.compile(r"[0-9]{1,19}")
_QUERY_NUMBER = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,9})?")


class Bad(Exception):
    """One or more failures of a value; ``sub`` extends the field path ("token" → "x.token")."""

    def __init__(self, code: str, message: str, sub: str | None = None) -> None:
        super().__init__(message)
        self.items: list[tuple[str | None, str, str]] = [(sub, code, message)]

    @classmethod
    def many(cls, items: list[tuple[str | None, str, str]]) -> Bad:
        bad = cls(*items[0][1:], sub=items[0][0])
        bad.items = list(items)
        return bad


# --- scalar checks -------------------------------------------------------------------------

def nullable(check: Check) -> Check:
    def run(value: Any) -> Any:
        return None if value is None else check(value)
    return run


def string(*, max_len: int, min_len: int = 1) -> Check:
    def run(value: Any) -> str:
        if not isinstance(value, str):
            raise Bad("invalid_type", "must be a string")
        if len(value) < min_len:
            raise Bad("invalid_value", "must not be empty" if min_len == 1
                      else f"must be at least {min_len} characters")
        if len(value) > max_len:
            raise Bad("too_long", f"must be at most {max_len} characters")
        if _CONTROL.search(value) is not None:
            raise Bad("invalid_value", "must not contain control characters")
        return value
    return run


def secret_text(*, max_len: int = 1024, min_len: int = 1) -> Check:
    """Like :func:`string` but the message never quotes the value."""
    return string(max_len=max_len, min_len=min_len)


# --- credentials sent in an HTTP Authorization header ---------------------------------------

def bearer_token_problem(token: str) -> str | None:
    """Why ``token`` cannot follow ``Bearer`` in an HTTP header, or None when it can.

    The token is sent as is: only visible ASCII (0x21-0x7E) is. httpx refuses anything
    else when it builds the request (``UnicodeEncodeError``), and a space would end the
    token (RFC 6750). The message names the position, never the character: it is a secret.
    """
    for index, char in enumerate(token):
        if not "\x21" <= char <= "\x7e":
            return ("must be visible ASCII characters only (letters, digits and punctuation; "
                    "no spaces, accented letters or symbols such as '…'): it is sent as is in "
                    f"the HTTP Authorization header; character {index + 1} is not")
    return None


def basic_user_problem(user: str) -> str | None:
    """Why ``user`` cannot be the user of HTTP basic authentication, or None.

    ``user:password`` is sent base64-encoded as UTF-8 (RFC 7617), so any text fits; but
    the receiver splits at the first ':', so a user holding one would arrive cut short.
    """
    if ":" in user:
        return "must not contain ':' (basic authentication separates user and password with it)"
    return None


def _fit_for_header(check: Check, problem: Callable[[str], str | None]) -> Check:
    def checked(value: Any) -> str:
        text = check(value)
        why = problem(text)
        if why is not None:
            raise Bad("invalid_value", why)
        return str(text)

    return checked


bearer_token = _fit_for_header(secret_text(max_len=4096), bearer_token_problem)
basic_user = _fit_for_header(string(max_len=256), basic_user_problem)


def identifier(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad("invalid_type", "must be a string")
    if len(value) > 64:
        raise Bad("too_long", "must be at most 64 characters")
    if not IDENT.fullmatch(value):
        raise Bad("invalid_value", "must be 1-64 characters of letters, digits, '.', '_', '-',"
                  " starting with a letter or digit")
    return value


def integer(low: int | None = None, high: int | None = None) -> Check:
    def run(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            # 5.0 is an integer written by a JSON encoder that knows only floats.
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            else:
                raise Bad("invalid_type", "must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise Bad("out_of_range", f"must be at least {low}")
            raise Bad("out_of_range", f"must be between {low} and {high}")
        if abs(value) > INT64_MAX:  # both databases store 64-bit integers
            raise Bad("out_of_range", "is too large")
        return value
    return run


def number(low: float, high: float) -> Check:
    def run(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise Bad("invalid_type", "must be a number")
        if not low <= value <= high:
            raise Bad("out_of_range", f"must be between {bound_text(low)} and {bound_text(high)}")
        return float(value)
    return run


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad("invalid_type", "must be true or false")
    return value


def choice(*options: str) -> Check:
    def run(value: Any) -> str:
        if not isinstance(value, str):
            raise Bad("invalid_type", "must be a string")
        if value not in options:
            raise Bad("invalid_value", "must be one of " + ", ".join(options))
        return value
    return run


def host(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad("invalid_type", "must be a string")
    if len(value) > 253:
        raise Bad("too_long", "must be at most 253 characters")
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        # checked before the address parser: the zone of "fe80::1%eth0" is free text to it
        raise Bad("invalid_value", "must be a host name or an IP address")
    literal = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(literal)
        # stored without brackets: "[::1]" is how URLs and SMTP write an address, but a
        # socket connects to "::1" (with brackets the name lookup fails)
        return literal
    except ValueError:
        pass
    if not _HOST.fullmatch(value):
        raise Bad("invalid_value", "must be a host name or an IP address")
    return value


def http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad("invalid_type", "must be a string")
    if len(value) > 2048:
        raise Bad("too_long", "must be at most 2048 characters")
    if not _URL.fullmatch(value):
        scheme, sep, rest = value.partition("://")
        if sep and scheme.lower() in ("http", "https") and "@" in rest.split("/", 1)[0]:
            raise Bad("invalid_value", "must not carry credentials (user:password@) before "
                      "its host: they go in their own field (client_auth for a tenant)")
        raise Bad("invalid_value", "must be an absolute http or https URL")
    if "?" in value or "#" in value:
        # a base URL: paths are appended to it, so a query or fragment would swallow them
        # (reports hunt: "…/base#frag" posted to /base, "…/base?x=1" to "?x=1/hooks/sync")
        raise Bad("invalid_value", "must not carry a query ('?') or fragment ('#'): paths "
                  "are appended to it")
    return value


def url_path(value: Any) -> str:
    text = string(max_len=1024)(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise Bad("invalid_value", "must start with '/' and contain no spaces")
    return text


def absolute_path(value: Any) -> str:
    text = string(max_len=4096)(value)
    if not text.startswith("/"):
        raise Bad("invalid_value", "must be an absolute path")
    return text


def address(value: Any) -> str:
    """A bare addr-spec, returned lower-cased (how suppression lists compare)."""
    if not isinstance(value, str):
        raise Bad("invalid_type", "must be a string")
    text = value.strip()
    if len(text) > 254:
        raise Bad("too_long", "must be at most 254 characters")
    if not _ADDR.fullmatch(text) or text.count("@") != 1:
        raise Bad("invalid_address", "is not a valid e-mail address")
    return text.lower()


def query_integer(value: Any) -> Any:
    """A query-string integer as an int; any other string becomes -1 (out of every range,
    so the caller's own check refuses it); non-strings are returned for that check."""
    if isinstance(value, str):
        return int(value) if _QUERY_INT.fullmatch(value) else -1
    return value


def query_number(value: Any) -> Any:
    """Like :func:`query_integer` for a plain decimal number ("1795567000", "1.5"); any other
    string is returned unchanged, for the caller's type check to refuse."""
    if isinstance(value, str) and _QUERY_NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return value


def timestamp(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise Bad("invalid_type", "must be a number of seconds since the epoch")
    if abs(value) > MAX_EPOCH:
        raise Bad("out_of_range", "is not a plausible time")
    return math.floor(value)


# --- whole bodies --------------------------------------------------------------------------

def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError("body", "invalid_type", "must be a JSON object")])
    return body


def read_body(body: dict[str, Any], checks: dict[str, Check], errors: list[FieldError], *,
              aliases: dict[str, str] | None = None, extra: Iterable[str] = ()) -> dict[str, Any]:
    """Normalised values of the present fields; failures are appended to ``errors``.

    ``aliases`` maps an accepted old name to its field; giving both with different values
    is a ``conflict``. Names in ``extra`` are accepted without a check (the caller reads them).
    """
    aliases = aliases or {}
    allowed = set(checks) | set(extra)
    out: dict[str, Any] = {}
    for name, value in body.items():
        if not isinstance(name, str):
            continue
        target = aliases.get(name, name)
        if target not in allowed:
            errors.append(FieldError(name, "unknown_field", "is not a known field"))
            continue
        if target != name and target in body:
            if body[target] != value:
                errors.append(FieldError(name, "conflict",
                                         f"is an alias of '{target}' and differs from it"))
            continue
        if target in extra:
            out[target] = value
            continue
        try:
            out[target] = checks[target](value)
        except Bad as bad:
            for sub, code, message in bad.items:
                path = f"{target}.{sub}" if sub else target
                errors.append(FieldError(path, code, message))
    return out


def fail_if(errors: list[FieldError]) -> None:
    if errors:
        raise ValidationFailed(errors)


def forbid_fields(present: Iterable[str], allowed: Iterable[str], what: str) -> None:
    """403 ``forbidden_field`` naming the first field a tenant key may not set."""
    allowed_set = set(allowed)
    for name in present:
        if name not in allowed_set:
            raise Forbidden(f"field '{name}' of {what} may only be set with the admin token",
                            code="forbidden_field", detail={"field": name})


def scoped_tenant(principal: Any, tenant_id: str | None) -> str:
    """The tenant a request acts on (api.md §2.3): a tenant key's own, or the admin's choice."""
    if tenant_id == "":  # an empty field is a missing one, not a tenant named ""
        tenant_id = None
    if getattr(principal, "is_tenant", False):
        own = principal.tenant_id
        if tenant_id is not None and tenant_id != own:
            raise Forbidden(f"this API key belongs to tenant '{own}', not '{tenant_id}'",
                            code="tenant_mismatch", detail={"tenant_id": tenant_id})
        return str(own)
    if tenant_id is None:
        raise BadRequest("tenant_id is required with the admin token",
                         code="missing_parameter", detail={"parameter": "tenant_id"})
    if not isinstance(tenant_id, str):
        raise ValidationFailed([FieldError("tenant_id", "invalid_type", "must be a string")])
    return tenant_id


# --- nested objects of tenants (api.md §7.1, enterprise.md §5.1) ---------------------------

def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad("invalid_type", "must be an object")
    return value


def _sub_fields(value: dict[str, Any], checks: dict[str, Check], required: Iterable[str] = (),
                aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Check the members of a nested object; every failure is raised together."""
    errors: list[FieldError] = []
    out = read_body(value, checks, errors, aliases=aliases)
    for name in required:
        if name not in out and not any(e.field == name for e in errors):
            errors.append(FieldError(name, "required", "is required"))
    if errors:
        raise Bad.many([(e.field, e.code, e.message) for e in errors])
    return out


def client_auth(value: Any) -> dict[str, Any]:
    """``{"method": "none"}``, bearer with ``token``, or basic with ``user`` and ``password``."""
    obj = _object(value)
    method = obj.get("method")
    if method is None:
        raise Bad("required", "is required", sub="method")
    if method not in ("none", "bearer", "basic"):
        raise Bad("invalid_value", "must be one of none, bearer, basic", sub="method")
    members: dict[str, Check] = {"method": choice("none", "bearer", "basic")}
    required: tuple[str, ...] = ()
    if method == "bearer":
        members["token"] = bearer_token
        required = ("token",)
    elif method == "basic":
        members["user"] = basic_user
        members["password"] = secret_text(max_len=1024)
        required = ("user", "password")
    try:
        return _sub_fields(obj, members, required)
    except Bad as bad:
        # Name the method in "required" messages: the client sees why the member is needed.
        bad.items = [(s, c, f"required when method is {method}" if c == "required" else m)
                     for s, c, m in bad.items]
        raise


def rate_limits(value: Any) -> dict[str, int | None]:
    obj = _sub_fields(_object(value), {
        "per_minute": nullable(integer(0)), "per_hour": nullable(integer(0)),
        "per_day": nullable(integer(0))}, aliases={"hourly": "per_hour", "daily": "per_day"})
    return {k: obj.get(k) for k in ("per_minute", "per_hour", "per_day")}


_STORAGE_EXTRAS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
                   "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure")}


def storage_url(value: Any) -> str:
    text = string(max_len=2048)(value)
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise Bad("invalid_value", "must be a URL such as file:///dir or s3://bucket/prefix")
    if scheme == "file":
        if not rest.startswith("/"):
            raise Bad("invalid_value", "a file:// URL needs an absolute path")
        return text
    if scheme not in _STORAGE_EXTRAS:
        raise Bad("invalid_value", "scheme must be file, s3, gs, az")
    return text


def large_file_config(value: Any) -> dict[str, Any]:
    """Normalised with every default filled in; cross-field rules of §5.1 included."""
    obj = _sub_fields(_object(value), {
        "enabled": boolean, "max_size_mb": number(0.1, 10000),
        "action": choice("warn", "reject", "rewrite"), "storage_url": nullable(storage_url),
        "storage_options": nullable(_object), "link_expiry_days": integer(1, 365),
        "public_base_url": nullable(http_url)})
    out = {"enabled": False, "max_size_mb": 10.0, "action": "warn", "storage_url": None,
           "storage_options": None, "link_expiry_days": 7, "public_base_url": None, **obj}
    if out["action"] == "rewrite" and out["storage_url"] is None:
        raise Bad("required", "required when action is rewrite", sub="storage_url")
    scheme = (out["storage_url"] or "").partition("://")[0]
    if scheme in _STORAGE_EXTRAS:
        import importlib.util

        module, extra = _STORAGE_EXTRAS[scheme]
        if importlib.util.find_spec(module) is None:
            raise Bad("invalid_value", f"{scheme}:// needs the extra mail-proxy[{extra}]",
                      sub="storage_url")
    return out
