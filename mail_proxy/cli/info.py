"""``info``, ``stats``, ``run-now``, ``suspend`` and ``activate`` (cli.md §5, §6).

Instance-level bodies take the instance name; tenant-level ones the tenant too. Counting
reads go through the store's named queries: there is no REST route they mirror.
"""

from __future__ import annotations

import time
from typing import Any

from mail_proxy.cli.application import out, print_json, table
from mail_proxy.cli.database import Session, logged, with_core
from mail_proxy.cli.dataview import age, cell, local_time, record_table

STATUSES = ("queued", "deferred", "sending", "sent", "error", "cancelled")


def instance_info(instance: str | None, json_output: bool) -> None:
    from mail_proxy import __version__
    from mail_proxy.instance.db_urls import redact_url
    from mail_proxy.instance.overview import summary

    async def run(s: Session) -> dict[str, Any]:
        tenants = await s.core.store.fetch("tenant_list", active_only=False)
        accounts = await s.core.store.fetch("account_list", tenant_id=None)
        return {"schema_version": await s.core.store.schema_version(),
                "tenants": len(tenants), "accounts": len(accounts)}

    counts = with_core(instance, run)
    from mail_proxy.cli.database import load_config

    config = load_config(instance)
    state, url = "UNKNOWN", config.url
    if config.folder is not None:
        row = summary(config.folder.name)
        state, url = row["state"] + (" (stale)" if row["stale"] else ""), row["url"]
    doc = {"ok": True, "name": config.name, "state": state, "url": url,
           "folder": str(config.folder) if config.folder else None,
           "database": redact_url(config.db_url), "version": __version__, **counts}
    if json_output:
        print_json(doc)
        return
    record_table([(k, cell(v)) for k, v in doc.items() if k != "ok"])


def stats(instance: str | None, json_output: bool) -> None:
    from mail_proxy.manager import messages

    async def run(s: Session) -> dict[str, Any]:
        store = s.core.store
        stamp = int(time.time())
        per_tenant = {}
        sent_last_hour = 0
        for t in await store.fetch("tenant_list", active_only=False):
            per_tenant[t["id"]] = await messages.counts(s.core, t["id"])
            sent_last_hour += int(await store.fetch_value(
                "send_log_count_tenant", tenant_id=t["id"], since=stamp - 3600) or 0)
        pending = {r["tenant_id"]: int(r["n"]) for r in await store.fetch(
            "report_pending_counts")}
        oldest = await store.fetch_value("oldest_queued")
        return {"ok": True, "messages": await messages.counts(s.core),
                "tenants": {tid: {"messages": counts, "pending_events": pending.get(tid, 0)}
                            for tid, counts in per_tenant.items()},
                "oldest_queued_age_seconds": stamp - int(oldest) if oldest else None,
                "sent_last_hour": int(await store.fetch_value("sent_since",
                                                              since=stamp - 3600) or 0),
                "send_log_last_hour": sent_last_hour}

    doc = with_core(instance, run)
    if json_output:
        print_json(doc)
        return
    rows = [["(all)", *(str(doc["messages"][st]) for st in STATUSES), "-"]]
    rows += [[tid, *(str(t["messages"][st]) for st in STATUSES), str(t["pending_events"])]
             for tid, t in doc["tenants"].items()]
    table(["TENANT", *(st.upper() for st in STATUSES), "EVENTS WAITING"], rows)
    out()
    out(f"oldest queued message: {age(doc['oldest_queued_age_seconds'])}")
    out(f"sent in the last hour: {doc['sent_last_hour']}")
    # send_log only holds the reservations of rate-limited accounts and tenants
    out(f"rate-limit reservations in the last hour: {doc['send_log_last_hour']}")


def run_now(instance: str | None, tenant: str | None) -> None:
    from mail_proxy.cli.worker import post_run_now

    post_run_now(instance, tenant)
    out("the worker was woken" + (f" for tenant '{tenant}'" if tenant else ""))


def tenant_info(instance: str | None, tenant: str, json_output: bool) -> None:
    from mail_proxy.manager import messages, tenants

    async def run(s: Session) -> dict[str, Any]:
        return {"ok": True, "tenant": await tenants.get_tenant(s.core, tenant),
                "messages": await messages.counts(s.core, tenant)}

    doc = with_core(instance, run)
    if json_output:
        print_json(doc)
        return
    t = doc["tenant"]
    report = t["report"]
    record_table([
        ("id", t["id"]), ("name", cell(t["name"])), ("active", cell(t["active"])),
        ("base url", cell(t["client_base_url"])),
        ("default account", cell(t["default_account_id"])),
        ("suspended batches", ", ".join(t["suspended_batches"]) or "-"),
        ("api key", "yes" if t["has_api_key"] else "no"),
        ("messages", "  ".join(f"{st} {doc['messages'][st]}" for st in STATUSES)),
        ("last report", local_time(report["last_report_at"])),
        ("report failures", str(report["failures"])),
        ("report backoff until", local_time(report["backoff_until"])),
        ("do not disturb until", local_time(report["dnd_until"])),
        ("events waiting", str(report["pending_events"])),
    ])


def suspension(instance: str | None, tenant: str, batch: str | None, *, suspend: bool,
               json_output: bool) -> None:
    from mail_proxy.cli.worker import wake
    from mail_proxy.manager import tenants

    endpoint = "POST /commands/suspend" if suspend else "POST /commands/activate"
    call = tenants.suspend if suspend else tenants.activate
    payload = {"tenant_id": tenant, "batch_code": batch}

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            return 200, {"ok": True, **await call(s.core, tenant, batch)}

        return await logged(s, endpoint, tenant, payload, action)

    answer = with_core(instance, run)
    if not suspend:
        wake(instance, tenant)
    if json_output:
        print_json(answer)
        return
    batches = answer["suspended_batches"]
    shown = "all batches" if batches == ["*"] else (", ".join(batches) or "none")
    out(f"suspended: {shown}")
    out(f"pending messages: {answer['pending_messages']}")
