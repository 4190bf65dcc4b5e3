"""``api_requests_per_minute``: a token bucket per valid token, counted by each worker alone.

A bucket holds up to N requests and refills at N per minute, so a client may burst N
requests and then sustain N per minute. Buckets are keyed by a hash of the token so the
table never holds a credential, and the table is bounded: full buckets carry no state and
are dropped when it grows.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from starlette.requests import Request

from mail_proxy.api.errors import ApiError

_MAX_BUCKETS = 50_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[bytes, _Bucket] = {}
        self._per_minute = 0

    def check(self, token: str, per_minute: int) -> float | None:
        """Take one request from the token's bucket. None when allowed, else the seconds
        until the next request would be allowed (for ``Retry-After``)."""
        if per_minute <= 0:
            return None
        if per_minute != self._per_minute:  # setting changed: start everyone afresh
            self._buckets.clear()
            self._per_minute = per_minute
        now: float = self._clock()  # type: ignore[operator]
        rate = per_minute / 60.0
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now, rate, per_minute)
            bucket = self._buckets[key] = _Bucket(float(per_minute), now)
        else:
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def _prune(self, now: float, rate: float, capacity: int) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.stamp) * rate >= capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_BUCKETS:  # all busy: forgetting is the safe side
            self._buckets.clear()


def limit_rate(request: Request, token: str, per_minute: int) -> None:
    """429 ``rate_limited`` when ``token`` has spent its requests of the minute."""
    if per_minute <= 0:
        return
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.check(token, per_minute)
    if wait is not None:
        raise ApiError(429, "rate_limited",
                       f"more than {per_minute} requests per minute with this token",
                       headers={"Retry-After": retry_after(wait)})


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
