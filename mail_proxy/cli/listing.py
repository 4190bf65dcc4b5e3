"""``mail-proxy list``: kept free of typer so the most used command starts fast."""

from __future__ import annotations

from mail_proxy.cli.application import duration, err, print_json, table


def show_list(json_output: bool) -> None:
    from mail_proxy.instance.overview import list_instances

    document = list_instances()
    if json_output:
        print_json(document)
        return
    rows = document["instances"]
    if not rows:
        err("no instances yet; create one with: mail-proxy start NAME")
        return
    table(["NAME", "STATE", "PID", "PORT", "URL", "DATABASE", "UPTIME"],
          [[r["name"], r["state"] + (" (stale)" if r["stale"] else ""),
            str(r["pid"] or "-"), str(r["port"] or "-"), r["url"] or "-",
            r["database"] or "-", duration(r["uptime_seconds"])] for r in rows])
