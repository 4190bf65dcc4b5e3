"""What the API handlers need from the worker, in one object on ``app.state``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mail_proxy import __version__
from mail_proxy.manager.core import Core


@dataclass
class ApiState:
    core: Core
    admin_token: str
    metrics: Any | None = None
    state: str = "running"            # "running" | "stopping"
    started_at: int = field(default_factory=lambda: int(time.time()))
    version: str = __version__
    wake_reporter: Callable[[str | None, bool], None] | None = None  # (tenant, forced)
    # Sets the gauges that describe this process (connections, cache) before a scrape.
    live_gauges: Callable[[], None] | None = None

    @property
    def stopping(self) -> bool:
        return self.state != "running"
