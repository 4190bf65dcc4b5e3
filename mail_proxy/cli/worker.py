"""Talking to the running worker: ``run-now`` and the best-effort wake after ``send``/``retry``.

The worker is reached at the host and port its supervisor recorded (else the configured
ones) with the admin token; stdlib ``http.client`` keeps this import-light.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from mail_proxy.cli.application import EXIT_INSTANCE, CliExit

TIMEOUT = 5.0


def _endpoint(instance: str | None) -> tuple[str, int, str] | None:
    """(host, port, token) of the running worker; None when it is not running."""
    from mail_proxy.instance.config import probe_host, resolve_process_config
    from mail_proxy.instance.states import read_record, supervisor_alive, worker_alive

    config = resolve_process_config(instance)
    host, port = config.host, config.port
    if config.folder is not None:
        record = read_record(config.folder)
        if not (supervisor_alive(record) or worker_alive(record)):
            return None
        assert record is not None
        host, port = record.get("host") or host, int(record.get("port") or port)
    return probe_host(host), port, config.api_token


def post_run_now(instance: str | None, tenant: str | None) -> dict[str, Any]:
    """``POST /commands/run-now``; exit 3 when the worker is not running or not reachable."""
    where = _endpoint(instance)
    name = instance or "mail-proxy"
    if where is None:
        raise CliExit(EXIT_INSTANCE, f"instance '{name}' is not running",
                      f"start it with: mail-proxy start {name}")
    host, port, token = where
    body = json.dumps({"tenant_id": tenant} if tenant else {})
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/commands/run-now", body=body,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise CliExit(EXIT_INSTANCE, f"instance '{name}' is not reachable at "
                                     f"{host}:{port} ({type(exc).__name__})") from None
    finally:
        conn.close()
    try:
        answer: dict[str, Any] = json.loads(raw)
    except ValueError:
        answer = {"ok": False, "error": f"HTTP {response.status}"}
    if response.status != 200:
        raise CliExit(1, f"the worker refused run-now: {answer.get('error', response.status)}")
    return answer


def wake(instance: str | None, tenant: str | None) -> bool:
    """Wake the worker if it runs; any failure is ignored (it polls anyway).

    Always without the tenant: run-now with a tenant also forces a report call past the
    tenant's backoff (reports.md §5), which a write from the CLI must not do; waking every
    tenant's dispatch costs one cycle. ``tenant`` is kept for the callers' clarity."""
    del tenant
    try:
        post_run_now(instance, None)
    except Exception:  # waking is only a shortcut: the worker polls anyway
        return False
    return True
