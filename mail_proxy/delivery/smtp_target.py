"""Where and how to deliver for one account (delivery.md §8.1), with the secret kept out of
its printed form."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to deliver for one account; also the pool key (delivery.md §8.1)."""

    tenant_id: str
    account_id: str
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    tls_mode: str = "starttls"  # "tls" | "starttls" | "none"
    tls_verify: bool = True
    tls_ca_file: str | None = None
    max_connections: int = 3
    max_lifetime: int = 300

    def __repr__(self) -> str:
        secret = "None" if self.password is None else "'***'"
        return (f"SmtpTarget(tenant_id={self.tenant_id!r}, account_id={self.account_id!r}, "
                f"host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"password={secret}, tls_mode={self.tls_mode!r}, "
                f"tls_verify={self.tls_verify}, tls_ca_file={self.tls_ca_file!r})")

    __str__ = __repr__

    @property
    def pool_key(self) -> tuple[Any, ...]:
        # Sizing is not part of the key: throttling may shrink max_connections to 1 and
        # that must not open a second pool next to the first.
        digest = (None if self.password is None
                  else hashlib.sha256(self.password.encode("utf-8")).hexdigest())
        return (self.tenant_id, self.account_id, self.host, self.port, self.user, digest,
                self.tls_mode, self.tls_verify, self.tls_ca_file)
