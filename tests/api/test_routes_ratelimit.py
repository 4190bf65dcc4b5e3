"""api_requests_per_minute: 429 rate_limited with Retry-After, per token."""

from __future__ import annotations

from typing import Any

from mail_proxy.api.ratelimit import RateLimiter
from tests.api.conftest import LiveServer


async def test_rate_limited_per_token(live: LiveServer, client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    assert (await client.patch("/instance", json={"api_requests_per_minute": 3},
                               headers=admin)).status_code == 200
    try:
        own = {"X-API-Token": live.keys["acme"]}
        statuses = [(await client.get("/status", headers=own)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get("/tenant/acme", headers=own)
        assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        other = await client.get("/status", headers={"X-API-Token": live.keys["other"]})
        assert other.status_code == 200  # another token has its own budget
        assert (await client.get("/health")).status_code == 200  # public: never limited
        # Unknown tokens get their 401 and no bucket: they cannot crowd out (nor, once the
        # table was full, reset) the buckets of the clients being limited.
        limiter = live.worker.server.config.app.state.rate_limiter
        buckets = len(limiter._buckets)
        bogus = [(await client.get("/status", headers={"X-API-Token": f"bogus-{i}"})
                  ).status_code for i in range(20)]
        assert bogus == [401] * 20 and len(limiter._buckets) == buckets
        assert (await client.get("/status", headers=own)).status_code == 429
    finally:
        # the admin token has spent 1 of its 3 requests
        answer = await client.patch("/instance", json={"api_requests_per_minute": None},
                                    headers=admin)
        assert answer.status_code == 200


def test_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.check("t", 60) for _ in range(60)] == [None] * 60
    wait = limiter.check("t", 60)
    assert wait is not None and 0.9 < wait <= 1.0
    now[0] += 1.0
    assert limiter.check("t", 60) is None
    assert limiter.check("t", 0) is None  # 0 = unlimited
