"""Message priority: numbers, numeric strings and labels (messages.md §2.3).

Priority 0 is "immediate" and is dispatched ahead of everything else, so the parser is strict
about what it accepts: a typo must be an error, never a silent change of lane.
"""

from __future__ import annotations

import re

__all__ = ["LABELS", "PRIORITY_MAX", "PRIORITY_MIN", "parse_priority", "resolve_priority"]

PRIORITY_MIN = 0
PRIORITY_MAX = 3
LABELS: dict[str, int] = {"immediate": 0, "high": 1, "medium": 2, "low": 3}
FALLBACK_PRIORITY = 2  # settings.md §2.1 default_priority

# Only ASCII digits: int() would also take "1_0" and Arabic-Indic digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _clamp(value: int) -> int:
    return PRIORITY_MIN if value < PRIORITY_MIN else min(value, PRIORITY_MAX)


def parse_priority(value: object) -> int | None:
    """Priority 0-3 for ``value``, None when it is absent (``null``).

    Raises ValueError for anything else (``"urgent"``, ``1.5``, ``true``, ``[]``).
    """
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int subclass; true is not a priority
        raise ValueError("not a priority")
    if isinstance(value, int):
        return _clamp(value)
    if isinstance(value, float):
        # JSON has one number type: 2.0 is the integer 2, but 1.5 is not a priority.
        if value.is_integer():
            return _clamp(int(value))
        raise ValueError("not a priority")
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text) is not None:
            return _clamp(int(text))
        label = LABELS.get(text.lower())
        if label is not None:
            return label
    raise ValueError("not a priority")


def resolve_priority(value: object, batch_default: int | None, setting_default: object) -> int:
    """Priority of one message: its own, else the request's, else the setting's."""
    own = parse_priority(value)
    if own is not None:
        return own
    if batch_default is not None:
        return batch_default
    try:
        configured = parse_priority(setting_default)
    except ValueError:
        configured = None
    return FALLBACK_PRIORITY if configured is None else configured
