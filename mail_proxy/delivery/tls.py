"""TLS client contexts for SMTP connections (delivery.md §8.3).

Building a context reads certificate files (the system store or ``tls_ca_file``), so the
async entry point runs it in a thread; one context is built per pool and reused by every
connection of that pool.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

log = logging.getLogger("mail_proxy.delivery.tls")


def build_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A client context: TLS >= 1.2, chain and host name checked unless ``verify`` is off.

    With ``ca_file`` only that bundle is trusted (the system store is *not* added), so an
    account pinned to a private CA cannot be fooled by a publicly trusted certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


async def context_for(*, verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Build off the event loop: loading a trust store reads files."""
    return await asyncio.to_thread(build_context, verify=verify, ca_file=ca_file)


def warn_insecure(tenant_id: str, account_id: str) -> None:
    """Logged at every pool creation so an unverified account never goes unnoticed."""
    log.warning("account %s/%s has tls_verify = false: TLS certificates are NOT checked; "
                "the connection is insecure", tenant_id, account_id)
