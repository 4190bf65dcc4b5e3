"""Size caps shared by the attachments of one message (delivery.md §9.8)."""

from __future__ import annotations

import pytest

from mail_proxy.delivery.attachments.limits import MessageBudget
from mail_proxy.errors import PermanentFailure


def test_declared_size_fails_before_any_byte() -> None:
    meter = MessageBudget(per_item=100, total=1000).meter("a.pdf")
    meter.declare(100)
    with pytest.raises(PermanentFailure, match=r"'a\.pdf': larger than max_attachment_bytes"):
        meter.declare(101)
    assert meter.size == 0


def test_streamed_bytes_count_against_item_and_message() -> None:
    budget = MessageBudget(per_item=100, total=150)
    first, second = budget.meter("a"), budget.meter("b")
    first.add(60)
    first.add(40)
    with pytest.raises(PermanentFailure) as info:
        first.add(1)
    assert info.value.code == "attachment_too_large"
    second.add(40)
    with pytest.raises(PermanentFailure, match="max_message_attachment_bytes"):
        second.add(10)
