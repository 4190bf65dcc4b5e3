"""What ``list`` and ``status`` show: the recorded state checked for liveness (cli.md §4, §9.4).

Values come from ``config.toml`` and ``supervisor.json`` only, never from GMP_* variables of
the caller's shell: ``list`` describes the instances as configured and running.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mail_proxy import __version__
from mail_proxy.errors import MailProxyError
from mail_proxy.instance import paths
from mail_proxy.instance.config import (
    check_toml_address,
    probe_host,
    read_toml,
    url_host,
)
from mail_proxy.instance.db_urls import redact_url
from mail_proxy.instance.states import ACTIVE_STATES, State, effective_state, read_record


def summary(name: str) -> dict[str, Any]:
    """One row of ``list --json``."""
    folder = paths.instance_dir(name)
    toml = read_toml(folder)
    record = read_record(folder)
    state, stale = effective_state(record)
    live = state in ACTIVE_STATES and not stale
    rec = record or {}
    if live and rec.get("host") and rec.get("port"):
        host, port = str(rec["host"]), rec["port"]  # what the supervisor really bound
    else:
        # a hand-edited host or port is shown as the problem it is, not as a bogus URL
        host, port = check_toml_address(toml, folder)
    started = rec.get("started_at") if live else None
    return {
        "name": name,
        "state": state.value,
        "stale": stale,
        "pid": rec.get("worker_pid") if live else None,
        "foreground": live and bool(rec.get("foreground")),  # run by `mail-proxy serve`
        "host": host,
        "port": port,
        "url": f"http://{url_host(host)}:{port}",
        "database": redact_url(str(toml.get("db_url", ""))) or None,
        "uptime_seconds": int(time.time() - started) if started else None,
    }


def list_instances() -> dict[str, Any]:
    rows = []
    for name in paths.instance_names():
        try:
            rows.append(summary(name))
        except MailProxyError as exc:
            rows.append({"name": name, "state": "UNKNOWN", "stale": False, "pid": None,
                         "foreground": False, "host": None, "port": None, "url": None,
                         "database": None, "uptime_seconds": None, "error": exc.message})
    return {"ok": True, "instances": rows}


def _server_status(host: str, port: int, token: str | None) -> dict[str, Any] | None:
    import http.client

    conn = http.client.HTTPConnection(probe_host(host), port, timeout=2.0)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", "/status", headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read() or b"null")
        return body if response.status == 200 and isinstance(body, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def status(name: str) -> dict[str, Any]:
    """The ``status --json`` document; raises InstanceError for an unknown instance."""
    folder = paths.existing_instance(name)
    row = summary(name)
    record = read_record(folder) or {}
    live = row["state"] in ACTIVE_STATES
    server = None
    if row["state"] == State.RUNNING.value:
        token_path = folder / "api_token"
        token = token_path.read_text(encoding="utf-8").strip() if token_path.exists() else None
        server = _server_status(row["host"], row["port"], token)
    return {
        "ok": True,
        "name": name,
        "state": row["state"],
        "stale": row["stale"],
        "supervisor_pid": record.get("supervisor_pid") if live else None,
        "worker_pid": row["pid"],
        "foreground": row["foreground"],
        "url": row["url"],
        "database": row["database"],
        "uptime_seconds": row["uptime_seconds"],
        "restarts": record.get("restarts", 0),
        "last_exit_code": record.get("last_exit_code"),
        "version": __version__,
        "server": server,
        **_messages(name),
    }


def _messages(name: str) -> dict[str, Any]:
    """Message counts by status, or why they are unknown ("none" would read as empty);
    ``messages_error`` appears only when the database could not be read."""
    from mail_proxy.instance.lookup import message_counts

    try:
        return {"messages": message_counts(name)}
    except MailProxyError as exc:
        return {"messages": None, "messages_error": exc.message}
