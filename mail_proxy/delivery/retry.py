"""What happens after a failed attempt: retry later or give up (delivery.md §5 and §7).

Pure functions of the message's columns and the failure, so the dispatcher's decision can
be tested without a database or a clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mail_proxy.errors import DeliveryFailure


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    next_attempt_at: int | None
    code: str
    text: str
    retries_exhausted: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    retry_delays: tuple[int, ...] = (60, 300, 900, 3600, 7200)
    retry_jitter: float = 0.1
    max_message_age: int = 259200

    @classmethod
    def from_settings(cls, s: Any) -> RetryPolicy:
        """``s`` is any object with the settings.md §2.2 attribute names."""
        return cls(max_retries=int(s.max_retries),
                   retry_delays=tuple(int(d) for d in s.retry_delays),
                   retry_jitter=float(s.retry_jitter),
                   max_message_age=int(s.max_message_age))

    def deadline(self, created_at: int, deferred_ts: int | None) -> int | None:
        """Last second a message may still be scheduled for, or None without an age limit."""
        if self.max_message_age <= 0:
            return None
        return max(created_at, deferred_ts or 0) + self.max_message_age

    def delay(self, attempts: int, rng: random.Random | None = None) -> int:
        """Jittered delay before the retry that follows attempt number ``attempts``.

        ``d = retry_delays[min(n - 1, len - 1)]``, then uniform in
        ``[d * (1 - jitter), d * (1 + jitter)]``, rounded, at least 1 second.
        """
        base = self.retry_delays[min(max(attempts, 1) - 1, len(self.retry_delays) - 1)]
        spread = base * self.retry_jitter
        value = (rng or random).uniform(base - spread, base + spread)
        return max(1, round(value))

    def decide(self, *, attempts: int, created_at: int, deferred_ts: int | None, now: int,
               failure: DeliveryFailure, rng: random.Random | None = None) -> RetryDecision:
        """Decide after attempt ``attempts`` (counted *after* the increment) failed.

        - permanent failure -> final, with the failure's code and text;
        - ``attempts > max_retries`` -> final, ``"max retries (N) exceeded: <text>"``,
          ``retries_exhausted``;
        - ``now + delay`` past ``max(created_at, deferred_ts) + max_message_age`` (when the
          age limit is not 0) -> final with code ``expired``;
        - otherwise retry at ``now + delay`` (see :meth:`delay`).

        Throttle replies do not consume attempts: use :meth:`after_throttle` for them.
        """
        text = failure.message
        if failure.permanent:
            return RetryDecision(False, None, failure.code, text)
        if attempts > self.max_retries:
            return RetryDecision(False, None, failure.code,
                                 f"max retries ({self.max_retries}) exceeded: {text}",
                                 retries_exhausted=True)
        at = now + self.delay(attempts, rng)
        limit = self.deadline(created_at, deferred_ts)
        if limit is not None and at > limit:
            return RetryDecision(False, None, "expired", _expired_text(self, text))
        return RetryDecision(True, at, failure.code, text)

    def after_throttle(self, *, created_at: int, deferred_ts: int | None, until: int,
                       failure: DeliveryFailure) -> RetryDecision:
        """A throttle reply: defer to ``until`` (the account's throttle_until), or expire."""
        limit = self.deadline(created_at, deferred_ts)
        if limit is not None and until > limit:
            return RetryDecision(False, None, "expired", _expired_text(self, failure.message))
        return RetryDecision(True, until, failure.code, failure.message)


def _expired_text(policy: RetryPolicy, last: str) -> str:
    return expired_text(policy.max_message_age, last)


def expired_text(max_message_age: int, last: str) -> str:
    """The failure text of an expired message, whatever made it expire (a retry or a
    throttle pause beyond ``max_message_age``): one format for one code."""
    return f"message expired (max_message_age {max_message_age} s): {last}"


def throttle_delay(level: int, base: int, max_delay: int) -> int:
    """Seconds an account pauses at throttle ``level`` (1-6): ``min(base * 2^(level-1), max)``."""
    return min(base * 2 ** (max(level, 1) - 1), max_delay)
