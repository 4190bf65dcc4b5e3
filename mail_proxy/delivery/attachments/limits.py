"""Failure helpers and the size caps of delivery.md §9.8-9.9, shared by every fetch mode."""

from __future__ import annotations

from mail_proxy.errors import PermanentFailure, TransientFailure

UNAVAILABLE = "attachment_unavailable"


def permanent(name: str, code: str, detail: str) -> PermanentFailure:
    """A permanent fetch failure whose text names the attachment (§9.9)."""
    return PermanentFailure(f"attachment '{name}': {detail}", code=code)


def transient(name: str, detail: str) -> TransientFailure:
    return TransientFailure(f"attachment '{name}': {detail}", code=UNAVAILABLE)


class MessageBudget:
    """Bytes taken so far by the attachments of one message.

    Fetches of one message run concurrently on one loop, so a plain counter suffices;
    a download is stopped as soon as its own or the message's cap is passed, which bounds
    memory by the cap rather than by what a source chooses to send.
    """

    def __init__(self, per_item: int, total: int) -> None:
        self.per_item = per_item
        self.total = total
        self.used = 0

    def meter(self, name: str) -> ItemMeter:
        return ItemMeter(self, name)


class ItemMeter:
    """Counts the bytes of one attachment against both caps."""

    def __init__(self, budget: MessageBudget, name: str) -> None:
        self.budget = budget
        self.name = name
        self.size = 0

    def declare(self, size: int) -> None:
        """Fail at once on an announced size (Content-Length, file size) above a cap."""
        self._check(size, self.budget.used + size)

    def add(self, size: int) -> None:
        self.size += size
        self.budget.used += size
        self._check(self.size, self.budget.used)

    def _check(self, item: int, total: int) -> None:
        if item > self.budget.per_item:
            raise permanent(self.name, "attachment_too_large",
                            f"larger than max_attachment_bytes ({self.budget.per_item})")
        if total > self.budget.total:
            raise permanent(self.name, "attachment_too_large",
                            "the message's attachments exceed max_message_attachment_bytes "
                            f"({self.budget.total})")
