"""Every error mail-proxy raises on purpose, and what the user can do about it.

::

    MailProxyError                      base; ``code`` is a stable machine code
    ├── ConfigurationError              bad settings, files or environment (CLI exit 2)
    │   └── KeyRingError                missing or malformed encryption key
    ├── InstanceError                   instance missing or not running (CLI exit 3)
    ├── NotFound                        tenant/account/message does not exist (HTTP 404)
    ├── Conflict                        request conflicts with current state (HTTP 409)
    ├── Forbidden                       authenticated but not allowed (HTTP 403)
    ├── ValidationFailed                one or more fields invalid (HTTP 422), ``fields``
    ├── BadRequest                      request cannot be used (HTTP 400)
    ├── StorageError                    database unusable (HTTP 503 storage_unavailable)
    │   └── SchemaTooNew                database written by a newer mail-proxy
    └── DeliveryFailure                 one delivery attempt failed
        ├── TransientFailure            retried on the retry schedule
        │   └── ThrottleFailure         the server asked us to slow down: no attempt consumed
        └── PermanentFailure            ends the message in ``error``

Message validation does not raise: it returns :class:`Rejection` values, because one bad
message in a batch must not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class MailProxyError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail
        self.hint = hint


class ConfigurationError(MailProxyError):
    code = "configuration_error"
    status = 500


class KeyRingError(ConfigurationError):
    code = "key_ring_error"


class InstanceError(MailProxyError):
    code = "instance_error"


class OperationFailed(MailProxyError):
    """The command could not do what was asked (CLI exit 1)."""

    code = "operation_failed"


class NotFound(MailProxyError):
    code = "not_found"
    status = 404


class Conflict(MailProxyError):
    code = "conflict"
    status = 409


class Forbidden(MailProxyError):
    code = "forbidden"
    status = 403


class BadRequest(MailProxyError):
    code = "invalid_body"
    status = 400


@dataclass(frozen=True)
class FieldError:
    """One failing field of a 422 answer (api.md §1.3)."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class ValidationFailed(MailProxyError):
    code = "validation_error"
    status = 422

    def __init__(self, fields: list[FieldError]) -> None:
        n = len(fields)
        text = fields[0].message if n == 1 else f"{n} fields are invalid"
        if n == 1:
            text = f"'{fields[0].field}': {fields[0].message}"
        super().__init__(text, detail=[f.as_dict() for f in fields])
        self.fields = fields


class StorageError(MailProxyError):
    code = "storage_unavailable"
    status = 503


class SchemaTooNew(StorageError):
    code = "schema_too_new"


@dataclass(frozen=True)
class Rejection:
    """Why one message of an add-messages batch was not stored (messages.md §2)."""

    code: str
    reason: str
    field: str | None = None

    def entry(self, index: int, message_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "id": message_id, "code": self.code,
                               "reason": self.reason}
        if self.field is not None:
            out["field"] = self.field
        return out


class RejectedMessage(Exception):
    """Raised inside validation helpers; carries the :class:`Rejection`."""

    def __init__(self, code: str, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.rejection = Rejection(code=code, reason=reason, field=field)


class DeliveryFailure(MailProxyError):
    """A failed delivery attempt, already classified (delivery.md §4)."""

    permanent = False
    throttle = False
    # set when the server had accepted a recipient when the transaction failed: the rate
    # slot then counts as used (delivery.md §3 step 8), since the message may have arrived
    recipients_accepted = False
    # the transaction's duration, from connection acquired to the failure (metrics.md
    # gmp_send_seconds); None when no connection was acquired
    transaction_seconds: float | None = None

    def __init__(self, text: str, *, code: str, smtp_code: int | None = None,
                 refused: list[dict[str, Any]] | None = None) -> None:
        super().__init__(text, code=code)
        self.smtp_code = smtp_code
        self.refused = refused or []


class TransientFailure(DeliveryFailure):
    pass


class ThrottleFailure(TransientFailure):
    throttle = True


class PermanentFailure(DeliveryFailure):
    permanent = True
