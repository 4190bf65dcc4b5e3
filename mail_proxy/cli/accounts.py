"""``mail-proxy NAME TENANT accounts …`` (cli.md §6, prompts §7.2, test §6.2)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, err, out, print_json, table
from mail_proxy.cli.dataview import can_prompt, cell, limits, record_pairs, record_table

app = typer.Typer(rich_markup_mode=None, help="SMTP accounts of the tenant.",
                  no_args_is_help=True, add_completion=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
IdArg = Annotated[str, typer.Argument(help="Account id.", show_default=False)]
Host = Annotated[str | None, typer.Option("--host", help="SMTP host.")]
Port = Annotated[int | None, typer.Option("--port", min=1, max=65535, help="SMTP port.")]
TlsMode = Annotated[str | None, typer.Option("--tls-mode", help="tls, starttls or none.")]
User = Annotated[str | None, typer.Option("--user", help="SMTP user (empty: no AUTH).")]
Password = Annotated[str | None, typer.Option("--password", help="SMTP password (- = stdin).")]
TlsVerify = Annotated[bool | None, typer.Option(
    "--tls-verify/--no-tls-verify", help="Check the server certificate.")]
CaFile = Annotated[str | None, typer.Option("--tls-ca-file", help="Trust only this CA bundle.")]
MaxConn = Annotated[int | None, typer.Option("--max-connections", min=1, max=50)]
BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, max=1000)]
Ttl = Annotated[int | None, typer.Option("--ttl", min=30, max=3600,
                                         help="Connection lifetime in seconds.")]
PerMinute = Annotated[int | None, typer.Option("--limit-per-minute", min=0)]
PerHour = Annotated[int | None, typer.Option("--limit-per-hour", min=0)]
PerDay = Annotated[int | None, typer.Option("--limit-per-day", min=0)]
Behavior = Annotated[str | None, typer.Option("--limit-behavior", help="defer or reject.")]
Default = Annotated[bool | None, typer.Option(
    "--default/--no-default", help="The tenant's default account.")]
Pec = Annotated[bool | None, typer.Option("--pec/--no-pec", help="A PEC account.")]
ImapHost = Annotated[str | None, typer.Option("--imap-host")]
ImapPort = Annotated[int | None, typer.Option("--imap-port", min=1, max=65535)]
ImapUser = Annotated[str | None, typer.Option("--imap-user")]
ImapPassword = Annotated[str | None, typer.Option("--imap-password", help="(- = stdin)")]
ImapFolder = Annotated[str | None, typer.Option("--imap-folder")]
ImapTls = Annotated[bool | None, typer.Option("--imap-tls/--no-imap-tls")]


def _where(ctx: typer.Context) -> tuple[str | None, str]:
    obj: AppContext = ctx.obj
    assert obj.tenant is not None
    return obj.instance, obj.tenant


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Table of accounts."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import accounts as manager

    instance, tenant = _where(ctx)
    listed = with_core(instance, lambda s: manager.list_accounts(s.core, tenant))
    if json_output:
        print_json({"ok": True, "accounts": listed})
        return
    if not listed:
        err(f"no accounts yet; add one with: mail-proxy {instance} {tenant} accounts add")
        return
    table(["ID", "HOST", "PORT", "TLS", "USER", "LIMITS (m/h/d)", "DEFAULT", "THROTTLE"],
          [[a["id"], a["host"], str(a["port"]), a["tls_mode"], cell(a["user"]),
            limits(a["limit_per_minute"], a["limit_per_hour"], a["limit_per_day"]),
            cell(a["is_default"]), str(a["throttle_level"] or "-")] for a in listed])


@app.command("show")
def show(ctx: typer.Context, account_id: IdArg, json_output: JsonOpt = False) -> None:
    """The account representation."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import accounts as manager

    instance, tenant = _where(ctx)
    account = with_core(instance, lambda s: manager.get_account(s.core, tenant, account_id))
    if json_output:
        print_json({"ok": True, "account": account})
    else:
        record_table(record_pairs(account, ("created_at", "updated_at", "throttle_until")))


def _flags(**given: Any) -> Any:
    from mail_proxy.cli.account_data import AccountFlags

    return AccountFlags(**given)


@app.command("add")
def add(ctx: typer.Context,
        account_id: Annotated[str | None, typer.Argument(help="Account id.",
                                                         show_default=False)] = None,
        host: Host = None, port: Port = None, tls_mode: TlsMode = None, user: User = None,
        password: Password = None, tls_verify: TlsVerify = None, tls_ca_file: CaFile = None,
        max_connections: MaxConn = None, batch_size: BatchSize = None, ttl: Ttl = None,
        limit_per_minute: PerMinute = None, limit_per_hour: PerHour = None,
        limit_per_day: PerDay = None, limit_behavior: Behavior = None, default: Default = None,
        pec: Pec = None, imap_host: ImapHost = None, imap_port: ImapPort = None,
        imap_user: ImapUser = None, imap_password: ImapPassword = None,
        imap_folder: ImapFolder = None, imap_tls: ImapTls = None,
        test: Annotated[bool | None, typer.Option(
            "--test/--no-test", help="Test the connection after creating it.")] = None,
        yes: YesOpt = False,
        no_input: Annotated[bool, typer.Option("--no-input", help="Never prompt.")] = False,
        json_output: JsonOpt = False) -> int:
    """Create an account (prompts on a terminal)."""
    from mail_proxy.cli.account_data import create_account

    flags = _flags(host=host, port=port, tls_mode=tls_mode, user=user, password=password,
                   tls_verify=tls_verify, tls_ca_file=tls_ca_file,
                   max_connections=max_connections, batch_size=batch_size, ttl=ttl,
                   limit_per_minute=limit_per_minute, limit_per_hour=limit_per_hour,
                   limit_per_day=limit_per_day, limit_behavior=limit_behavior, default=default,
                   pec=pec, imap_host=imap_host, imap_port=imap_port, imap_user=imap_user,
                   imap_password=imap_password, imap_folder=imap_folder, imap_tls=imap_tls)
    instance, tenant = _where(ctx)
    return create_account(instance, tenant, account_id, flags, test=test, yes=yes,
                          prompt=can_prompt(no_input), json_output=json_output)


@app.command("update")
def update(ctx: typer.Context, account_id: IdArg,
           host: Host = None, port: Port = None, tls_mode: TlsMode = None, user: User = None,
           password: Password = None, tls_verify: TlsVerify = None, tls_ca_file: CaFile = None,
           max_connections: MaxConn = None, batch_size: BatchSize = None, ttl: Ttl = None,
           limit_per_minute: PerMinute = None, limit_per_hour: PerHour = None,
           limit_per_day: PerDay = None, limit_behavior: Behavior = None,
           default: Default = None, pec: Pec = None, imap_host: ImapHost = None,
           imap_port: ImapPort = None, imap_user: ImapUser = None,
           imap_password: ImapPassword = None, imap_folder: ImapFolder = None,
           imap_tls: ImapTls = None, json_output: JsonOpt = False) -> None:
    """Partial update of an account (PATCH semantics)."""
    from mail_proxy.cli.account_data import update_account

    flags = _flags(host=host, port=port, tls_mode=tls_mode, user=user, password=password,
                   tls_verify=tls_verify, tls_ca_file=tls_ca_file,
                   max_connections=max_connections, batch_size=batch_size, ttl=ttl,
                   limit_per_minute=limit_per_minute, limit_per_hour=limit_per_hour,
                   limit_per_day=limit_per_day, limit_behavior=limit_behavior, default=default,
                   pec=pec, imap_host=imap_host, imap_port=imap_port, imap_user=imap_user,
                   imap_password=imap_password, imap_folder=imap_folder, imap_tls=imap_tls)
    instance, tenant = _where(ctx)
    update_account(instance, tenant, account_id, flags, json_output=json_output)


@app.command("delete")
def delete(ctx: typer.Context, account_id: IdArg,
           force: Annotated[bool, typer.Option(
               "--force", help="Delete even with messages waiting (they are cancelled).")
           ] = False,
           yes: YesOpt = False, json_output: JsonOpt = False) -> int:
    """Delete an account."""
    from mail_proxy.cli.account_data import delete_account
    from mail_proxy.cli.asking import confirm_destructive

    instance, tenant = _where(ctx)
    if not confirm_destructive(f"Delete account '{account_id}' of tenant '{tenant}'?",
                               yes=yes, can_prompt=can_prompt(False)):
        err("nothing deleted")
        return 1
    answer = delete_account(instance, tenant, account_id, force)
    if json_output:
        print_json(answer)
    else:
        out(f"deleted account '{account_id}'"
            + (f" ({answer['cancelled_messages']} messages cancelled)"
               if answer["cancelled_messages"] else ""))
    return 0


@app.command("test")
def test_(ctx: typer.Context, account_id: IdArg,
          to: Annotated[str | None, typer.Option(
              "--to", help="Also send a short test message to this address.")] = None,
          sender: Annotated[str | None, typer.Option(
              "--from", help="Sender of the test message (default: the account user).")] = None,
          timeout: Annotated[float, typer.Option("--timeout", min=0.1,
                                                 help="Seconds per step.")] = 15.0,
          json_output: JsonOpt = False) -> int:
    """Connect as the dispatcher would and report each step."""
    from mail_proxy.cli.account_data import run_test

    instance, tenant = _where(ctx)
    return run_test(instance, tenant, account_id, to=to, sender=sender, timeout=timeout,
                    json_output=json_output)
