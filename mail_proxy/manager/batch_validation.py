"""The entries of one add-messages request: each through ``validate_message``, plus the
rule that spans entries (messages.md check 19, an id used twice in one request)."""

from __future__ import annotations

from typing import Any

from mail_proxy.errors import RejectedMessage
from mail_proxy.manager.addresses import quote
from mail_proxy.manager.validation import (
    CONTROL,
    ValidationContext,
    ValidMessage,
    reject,
    validate_message,
)


def _usable_id(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return None
    value = entry.get("id")
    if isinstance(value, str) and 1 <= len(value) <= 255 and CONTROL.search(value) is None:
        return value
    return None


class BatchValidator:
    """Validates the entries of one request, possibly a slice at a time (a big batch yields
    to the event loop between slices, see ``manager.enqueue``).

    Check 19 (duplicate id) counts every earlier entry carrying the id, accepted or not, so
    the outcome of an entry never depends on whether an earlier one happened to be valid.
    """

    def __init__(self, ctx: ValidationContext, *, message_id_domain: str) -> None:
        self.ctx = ctx
        self.message_id_domain = message_id_domain
        self.accepted: list[tuple[int, ValidMessage]] = []
        self.rejected: list[dict[str, Any]] = []
        self._first_seen: dict[tuple[str | None, str], int] = {}

    def add(self, entries: list[object], offset: int = 0) -> None:
        """Validate ``entries``, the request's entries from index ``offset`` on."""
        ctx, first_seen = self.ctx, self._first_seen
        for index, entry in enumerate(entries, offset):
            usable = _usable_id(entry)
            key = None
            if usable is not None:
                assert isinstance(entry, dict)
                own = entry.get("tenant_id")
                tenant = own if isinstance(own, str) and own else \
                    ctx.request_tenant_id or ctx.key_tenant_id
                key = (tenant, usable)
            try:
                message = validate_message(entry, index, ctx,
                                           message_id_domain=self.message_id_domain)
                if key is not None and key in first_seen:
                    reject("duplicate_id", "id", f"{quote(usable)} is already used by message "
                            f"{first_seen[key]} of this request")
            except RejectedMessage as exc:
                self.rejected.append(exc.rejection.entry(index, usable))
            else:
                self.accepted.append((index, message))
            if key is not None:
                first_seen.setdefault(key, index)


def validate_batch(entries: list[object], ctx: ValidationContext, *, message_id_domain: str,
                   ) -> tuple[list[tuple[int, ValidMessage]], list[dict[str, Any]]]:
    """Validate every entry; returns accepted (index, message) pairs and rejection entries."""
    validator = BatchValidator(ctx, message_id_domain=message_id_domain)
    validator.add(entries)
    return validator.accepted, validator.rejected
