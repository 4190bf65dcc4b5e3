"""TLS client contexts for SMTP connections (delivery.md §8.3).

Building a context reads certificate files (the system store or ``tls_ca_file``), so the
async entry point runs it in a thread. A context holding the system store takes about
840 KB, so pools with the same trust share one: built per pool, a hundred accounts used
more memory than the whole idle worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections import OrderedDict

log = logging.getLogger("mail_proxy.delivery.tls")
# Distinct trusts kept (the system store, with and without checks, and each CA file); the
# least recently asked for goes first, and its pools keep the context they hold.
SHARED_CONTEXTS = 32
_shared: OrderedDict[tuple[object, ...], ssl.SSLContext] = OrderedDict()
_shared_lock = threading.Lock()  # the builds run in threads


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
    """A shared context for this trust, built off the event loop (loading a trust store
    reads files)."""
    return await asyncio.to_thread(_shared_context, verify, ca_file)


def _shared_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    key: tuple[object, ...] = (verify, None, None)
    if verify and ca_file:
        # a CA file replaced in place (a renewed private CA) is read again
        st = os.stat(ca_file)
        key = (verify, ca_file, (st.st_ino, st.st_mtime_ns, st.st_size))
    with _shared_lock:
        ctx = _shared.get(key)
        if ctx is not None:
            _shared.move_to_end(key)
            return ctx
    ctx = build_context(verify=verify, ca_file=ca_file)
    with _shared_lock:
        ctx = _shared.setdefault(key, ctx)  # a concurrent build of the same trust wins
        _shared.move_to_end(key)
        while len(_shared) > SHARED_CONTEXTS:
            _shared.popitem(last=False)
    return ctx


def warn_insecure(tenant_id: str, account_id: str) -> None:
    """Logged at every pool creation so an unverified account never goes unnoticed."""
    log.warning("account %s/%s has tls_verify = false: TLS certificates are NOT checked; "
                "the connection is insecure", tenant_id, account_id)
