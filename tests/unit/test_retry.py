"""Retry schedule, jitter, exhaustion and expiry (delivery.md §5, §7)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from mail_proxy.delivery.retry import RetryPolicy, throttle_delay
from mail_proxy.errors import PermanentFailure, ThrottleFailure, TransientFailure

NOW = 1_800_000_000
TRANSIENT = TransientFailure("451 4.3.0 Local error", code="smtp_transient", smtp_code=451)


def exact(**kw: object) -> RetryPolicy:
    return RetryPolicy(retry_jitter=0.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("attempts", "delay"),
                         [(1, 60), (2, 300), (3, 900), (4, 3600), (5, 7200)])
def test_schedule_without_jitter(attempts: int, delay: int) -> None:
    d = exact().decide(attempts=attempts, created_at=NOW, deferred_ts=None, now=NOW,
                       failure=TRANSIENT)
    assert d.retry and d.next_attempt_at == NOW + delay
    assert (d.code, d.text, d.retries_exhausted) == ("smtp_transient", TRANSIENT.message, False)


def test_last_delay_repeats() -> None:
    policy = exact(max_retries=10, retry_delays=(10, 20))
    assert [policy.delay(n) for n in range(1, 6)] == [10, 20, 20, 20, 20]


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy(retry_jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(2, rng) for _ in range(2000)]
    assert min(delays) >= 270 and max(delays) <= 330
    assert len(set(delays)) > 30
    assert min(delays) < 275 and max(delays) > 325  # the whole band is used


def test_delay_is_at_least_one_second() -> None:
    policy = RetryPolicy(retry_delays=(1,), retry_jitter=0.5)
    assert min(policy.delay(1, random.Random(i)) for i in range(200)) == 1


def test_max_retries_exceeded() -> None:
    d = exact().decide(attempts=6, created_at=NOW, deferred_ts=None, now=NOW,
                       failure=TRANSIENT)
    assert not d.retry and d.next_attempt_at is None
    assert d.retries_exhausted
    assert d.code == "smtp_transient"
    assert d.text == "max retries (5) exceeded: 451 4.3.0 Local error"


def test_permanent_failure_is_final_at_once() -> None:
    failure = PermanentFailure("550 5.1.1 User unknown", code="smtp_permanent", smtp_code=550)
    d = exact().decide(attempts=1, created_at=NOW, deferred_ts=None, now=NOW, failure=failure)
    assert (d.retry, d.code, d.text, d.retries_exhausted) == (
        False, "smtp_permanent", "550 5.1.1 User unknown", False)


def test_expiry_counts_from_the_later_of_created_and_deferred() -> None:
    policy = exact(max_message_age=1000)
    d = policy.decide(attempts=1, created_at=NOW - 950, deferred_ts=None, now=NOW,
                      failure=TRANSIENT)
    assert (d.retry, d.code) == (False, "expired")
    assert "451 4.3.0 Local error" in d.text
    d = policy.decide(attempts=1, created_at=NOW - 950, deferred_ts=NOW - 500, now=NOW,
                      failure=TRANSIENT)
    assert d.retry and d.next_attempt_at == NOW + 60


def test_age_limit_zero_disables_expiry() -> None:
    d = exact(max_message_age=0).decide(attempts=5, created_at=0, deferred_ts=None, now=NOW,
                                        failure=TRANSIENT)
    assert d.retry


def test_throttle_defers_without_attempt_unless_expired() -> None:
    failure = ThrottleFailure("421 4.7.0 Slow down", code="throttled", smtp_code=421)
    policy = RetryPolicy(max_message_age=1000)
    d = policy.after_throttle(created_at=NOW, deferred_ts=None, until=NOW + 60, failure=failure)
    assert (d.retry, d.next_attempt_at, d.code) == (True, NOW + 60, "throttled")
    d = policy.after_throttle(created_at=NOW - 990, deferred_ts=None, until=NOW + 60,
                              failure=failure)
    assert (d.retry, d.code) == (False, "expired")


def test_throttle_delay_doubles_up_to_the_cap() -> None:
    assert [throttle_delay(level, 60, 1800) for level in range(1, 7)] == \
        [60, 120, 240, 480, 960, 1800]


def test_from_settings() -> None:
    s = SimpleNamespace(max_retries=2, retry_delays=[5, 10], retry_jitter=0.2,
                        max_message_age=99)
    assert RetryPolicy.from_settings(s) == RetryPolicy(2, (5, 10), 0.2, 99)
