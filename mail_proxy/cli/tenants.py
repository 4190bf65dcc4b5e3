"""``mail-proxy NAME tenants …`` (cli.md §5, prompts §7.1): the same manager calls as the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mail_proxy.cli.application import AppContext, CliExit, err, out, print_json, table
from mail_proxy.cli.dataview import can_prompt, cell, record_pairs, record_table

app = typer.Typer(rich_markup_mode=None, help="Tenants of the instance.", no_args_is_help=True,
                  add_completion=False)
keys_app = typer.Typer(rich_markup_mode=None, help="Tenant API keys.", no_args_is_help=True,
                       add_completion=False)
app.add_typer(keys_app, name="api-key")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
IdArg = Annotated[str, typer.Argument(help="Tenant id.", show_default=False)]
Name = Annotated[str | None, typer.Option("--name", help="Display name.")]
BaseUrl = Annotated[str | None, typer.Option(
    "--base-url", help="Application base URL (empty: no reports, no endpoint attachments).")]
SyncPath = Annotated[str | None, typer.Option("--sync-path", help="Report path.")]
AttPath = Annotated[str | None, typer.Option("--attachment-path", help="Attachment path.")]
Auth = Annotated[str | None, typer.Option("--auth", help="none, bearer or basic.")]
AuthToken = Annotated[str | None, typer.Option("--auth-token", help="Bearer token (- = stdin).")]
AuthUser = Annotated[str | None, typer.Option("--auth-user", help="Basic auth user.")]
AuthPassword = Annotated[str | None, typer.Option(
    "--auth-password", help="Basic auth password (- = stdin).")]
Signing = Annotated[str | None, typer.Option(
    "--signing-secret", help="Secret signing the reports (- = stdin).")]
GenSigning = Annotated[bool | None, typer.Option(
    "--generate-signing-secret", help="Generate a signing secret and print it once.")]
DefaultAccount = Annotated[str | None, typer.Option("--default-account", help="Account id.")]
PerMinute = Annotated[int | None, typer.Option("--rate-per-minute", min=0)]
PerHour = Annotated[int | None, typer.Option("--rate-per-hour", min=0)]
PerDay = Annotated[int | None, typer.Option("--rate-per-day", min=0)]
LargeFile = Annotated[str | None, typer.Option("--large-file-config", help="JSON object.")]
Active = Annotated[bool | None, typer.Option("--active/--inactive", help="Allow sending.")]
NoInput = Annotated[bool, typer.Option("--no-input", help="Never prompt.")]


def _instance(ctx: typer.Context) -> str | None:
    obj: AppContext = ctx.obj
    return obj.instance


@app.command("list")
def list_(ctx: typer.Context,
          active_only: Annotated[bool, typer.Option("--active-only")] = False,
          json_output: JsonOpt = False) -> None:
    """Table of tenants."""
    from mail_proxy.cli.tenant_data import tenant_rows

    doc, extra = tenant_rows(_instance(ctx), active_only)
    if json_output:
        print_json(doc)
        return
    if not doc["tenants"]:
        err(f"no tenants yet; add one with: mail-proxy {_instance(ctx)} tenants add")
        return
    table(["ID", "NAME", "ACTIVE", "BASE URL", "ACCOUNTS", "QUEUED", "API KEY"],
          [[t["id"], cell(t["name"]), cell(t["active"]), cell(t["client_base_url"]),
            str(extra[t["id"]]["accounts"]), str(extra[t["id"]]["queued"]),
            extra[t["id"]]["api_key"]] for t in doc["tenants"]])


@app.command("show")
def show(ctx: typer.Context, tenant_id: IdArg, json_output: JsonOpt = False) -> None:
    """The tenant representation."""
    from mail_proxy.cli.database import with_core
    from mail_proxy.manager import tenants as manager

    tenant = with_core(_instance(ctx), lambda s: manager.get_tenant(s.core, tenant_id))
    if json_output:
        print_json({"ok": True, "tenant": tenant})
    else:
        record_table(record_pairs(tenant, ("created_at", "updated_at", "api_key_expires_at")))


@app.command("add")
def add(ctx: typer.Context,
        tenant_id: Annotated[str | None, typer.Argument(help="Tenant id.",
                                                        show_default=False)] = None,
        name: Name = None, base_url: BaseUrl = None, sync_path: SyncPath = None,
        attachment_path: AttPath = None, auth: Auth = None, auth_token: AuthToken = None,
        auth_user: AuthUser = None, auth_password: AuthPassword = None,
        signing_secret: Signing = None, generate_signing_secret: GenSigning = None,
        default_account: DefaultAccount = None, rate_per_minute: PerMinute = None,
        rate_per_hour: PerHour = None, rate_per_day: PerDay = None,
        large_file_config: LargeFile = None, active: Active = None,
        api_key: Annotated[bool | None, typer.Option(
            "--api-key/--no-api-key", help="Create an API key (default: yes).")] = None,
        yes: YesOpt = False, no_input: NoInput = False, json_output: JsonOpt = False) -> int:
    """Create a tenant (prompts on a terminal)."""
    from mail_proxy.cli.tenant_data import FlagValues, create_tenant

    values = FlagValues(name=name, base_url=base_url, sync_path=sync_path,
                        attachment_path=attachment_path, auth=auth, auth_token=auth_token,
                        auth_user=auth_user, auth_password=auth_password,
                        signing_secret=signing_secret,
                        generate_signing_secret=generate_signing_secret,
                        default_account=default_account, rate_per_minute=rate_per_minute,
                        rate_per_hour=rate_per_hour, rate_per_day=rate_per_day,
                        large_file_config=large_file_config, active=active)
    return create_tenant(_instance(ctx), tenant_id, values, api_key=api_key, yes=yes,
                         prompt=can_prompt(no_input), json_output=json_output)


@app.command("update")
def update(ctx: typer.Context, tenant_id: IdArg,
           name: Name = None, base_url: BaseUrl = None, sync_path: SyncPath = None,
           attachment_path: AttPath = None, auth: Auth = None, auth_token: AuthToken = None,
           auth_user: AuthUser = None, auth_password: AuthPassword = None,
           signing_secret: Signing = None, generate_signing_secret: GenSigning = None,
           default_account: DefaultAccount = None, rate_per_minute: PerMinute = None,
           rate_per_hour: PerHour = None, rate_per_day: PerDay = None,
           large_file_config: LargeFile = None, active: Active = None,
           json_output: JsonOpt = False) -> None:
    """Partial update of a tenant (PATCH semantics); no prompts."""
    from mail_proxy.cli.tenant_data import FlagValues, update_tenant

    values = FlagValues(name=name, base_url=base_url, sync_path=sync_path,
                        attachment_path=attachment_path, auth=auth, auth_token=auth_token,
                        auth_user=auth_user, auth_password=auth_password,
                        signing_secret=signing_secret,
                        generate_signing_secret=generate_signing_secret,
                        default_account=default_account, rate_per_minute=rate_per_minute,
                        rate_per_hour=rate_per_hour, rate_per_day=rate_per_day,
                        large_file_config=large_file_config, active=active)
    update_tenant(_instance(ctx), tenant_id, values, json_output=json_output)


@app.command("delete")
def delete(ctx: typer.Context, tenant_id: IdArg,
           force: Annotated[bool, typer.Option(
               "--force", help="Delete even with messages waiting or being sent.")] = False,
           yes: YesOpt = False, json_output: JsonOpt = False) -> int:
    """Delete a tenant, its accounts and its messages."""
    from mail_proxy.cli.asking import confirm_destructive
    from mail_proxy.cli.database import logged, with_core
    from mail_proxy.manager import tenants as manager

    if not confirm_destructive(f"Delete tenant '{tenant_id}' with its accounts and messages?",
                               yes=yes, can_prompt=can_prompt(False)):
        err("nothing deleted")
        return 1

    async def body(s: Any) -> Any:
        async def action() -> tuple[int, Any]:
            deleted = await manager.delete_tenant(s.core, tenant_id, force=force)
            return 200, {"ok": True, "deleted": deleted}

        return await logged(s, "DELETE /tenant/{id}", tenant_id,
                            {"id": tenant_id, "force": force}, action)

    answer = _with_in_use_hint(lambda: with_core(_instance(ctx), body))
    if json_output:
        print_json(answer)
    else:
        d = answer["deleted"]
        out(f"deleted tenant '{tenant_id}' ({d['accounts']} accounts, "
            f"{d['messages']} messages)")
    return 0


def _with_in_use_hint(call: Any) -> Any:
    from mail_proxy.errors import Conflict

    try:
        return call()
    except Conflict as exc:
        counts = ", ".join(f"{n} {k}" for k, n in (exc.detail or {}).items() if n)
        raise CliExit(1, f"{exc.message} ({counts})",
                      "pass --force to delete the tenant with all its messages") from None


@keys_app.command("create")
def key_create(ctx: typer.Context, tenant_id: IdArg,
               expires_at: Annotated[str | None, typer.Option(
                   "--expires-at", help="Expiry: epoch seconds or ISO date/time.")] = None,
               expires_in: Annotated[str | None, typer.Option(
                   "--expires-in", help="Expiry as a duration, e.g. 90d.")] = None,
               json_output: JsonOpt = False) -> None:
    """Create or replace the tenant's API key and print it once."""
    import time

    from mail_proxy.cli.dataview import local_time, parse_duration, parse_when
    from mail_proxy.cli.tenant_data import create_key

    if expires_at and expires_in:
        raise CliExit(2, "give --expires-at or --expires-in, not both")
    expiry = parse_when(expires_at, "--expires-at") if expires_at else None
    if expires_in:
        expiry = int(time.time()) + parse_duration(expires_in, "--expires-in")
    answer = create_key(_instance(ctx), tenant_id, expiry)
    if json_output:
        print_json(answer)
        return
    out(answer["api_key"])
    when = local_time(answer["expires_at"]) if answer["expires_at"] else "never"
    err(f"API key of tenant '{tenant_id}' (expires: {when}); it cannot be shown again")


@keys_app.command("revoke")
def key_revoke(ctx: typer.Context, tenant_id: IdArg, json_output: JsonOpt = False) -> None:
    """Revoke the tenant's API key."""
    from mail_proxy.cli.tenant_data import revoke_key

    answer = revoke_key(_instance(ctx), tenant_id)
    if json_output:
        print_json(answer)
    else:
        out(f"API key of tenant '{tenant_id}' revoked" if answer["revoked"]
            else f"tenant '{tenant_id}' had no API key")
