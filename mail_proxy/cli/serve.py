"""``mail-proxy serve``: the worker in the foreground, for systemd, containers and supervisors."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mail_proxy.cli.application import abort

SUPERVISOR_PID_ENV = "MAIL_PROXY_SUPERVISOR_PID"


def _own_supervisor(record: dict | None) -> bool:
    """True when we are the worker that the recorded (live) supervisor spawned."""
    raw = os.environ.get(SUPERVISOR_PID_ENV, "")
    return (bool(record) and raw.isdigit() and int(raw) == (record or {}).get("supervisor_pid")
            and os.getppid() == int(raw))


def serve(name: Annotated[str | None, typer.Argument(
              help="Instance name (default: GMP_INSTANCE, else mail-proxy).",
              show_default=False)] = None,
          host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
          port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
          ) -> int:
    """Run the worker in the foreground without a supervisor."""
    import signal

    # a reload (SIGHUP: token --regenerate, rotate-key, systemctl reload) that arrives
    # before the worker's own handler is in place must not kill it: its default action is
    # to terminate, which a supervisor counted as a crash
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from mail_proxy.instance.config import resolve_process_config
    from mail_proxy.instance.keyring import check_key_ring
    from mail_proxy.instance.states import read_record, supervisor_alive

    config = resolve_process_config(name, host=host, port=port)
    supervised = False
    if config.folder is not None:
        record = read_record(config.folder)
        supervised = _own_supervisor(record)
        if supervisor_alive(record) and not supervised:
            running = "in the foreground (mail-proxy serve)" if (record or {}).get(
                "foreground") else "under its supervisor"
            abort(f"instance '{config.name}' is running {running}",
                  hint=f"stop it first: mail-proxy stop {config.name}")
    check_key_ring(config.folder)
    try:
        from mail_proxy.server import serve as run_worker
    except ImportError as exc:
        if exc.name != "mail_proxy.server":
            raise
        abort("the worker (mail_proxy.server) is not available in this build")
    if config.folder is None or supervised:
        return run_worker(config)
    from mail_proxy.instance.foreground import recorded_as_running

    with recorded_as_running(config) as run:
        if run is None:
            abort(f"instance '{config.name}' is being started or run by another process",
                  hint=f"mail-proxy status {config.name}")
        run.exit_code = run_worker(config)
        return run.exit_code


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
