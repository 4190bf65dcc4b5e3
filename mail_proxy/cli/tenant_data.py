"""Bodies of the ``tenants`` commands: flags (and prompts) to an API body, then the manager.

The body handed to ``manager.tenants`` is exactly what ``POST /tenant`` or
``PATCH /tenant/{id}`` would receive, so validation and representations are the API's own.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from mail_proxy.cli.application import EXIT_USAGE, CliExit, err, out, print_json
from mail_proxy.cli.asking import Asker, confirm_write, field_check
from mail_proxy.cli.database import FLAG_NAMES, Session, logged, with_core
from mail_proxy.cli.dataview import record_table, secret_value
from mail_proxy.jsonfast import loads_strict

FLAG_NAMES.update({
    "id": "tenant id", "name": "--name", "client_base_url": "--base-url",
    "client_sync_path": "--sync-path", "client_attachment_path": "--attachment-path",
    "client_auth": "--auth", "client_auth.token": "--auth-token",
    "client_auth.user": "--auth-user", "client_auth.password": "--auth-password",
    "signing_secret": "--signing-secret", "default_account_id": "--default-account",
    "large_file_config": "--large-file-config", "rate_limits": "--rate-per-*",
})


@dataclass
class FlagValues:
    name: str | None = None
    base_url: str | None = None
    sync_path: str | None = None
    attachment_path: str | None = None
    auth: str | None = None
    auth_token: str | None = None
    auth_user: str | None = None
    auth_password: str | None = None
    signing_secret: str | None = None
    generate_signing_secret: bool | None = None
    default_account: str | None = None
    rate_per_minute: int | None = None
    rate_per_hour: int | None = None
    rate_per_day: int | None = None
    large_file_config: str | None = None
    active: bool | None = None

    def read_stdin_secrets(self) -> None:
        for name in ("auth_token", "auth_password", "signing_secret"):
            setattr(self, name, secret_value(getattr(self, name),
                                             "--" + name.replace("_", "-")))


def _check_id(text: str) -> str | None:
    from mail_proxy.manager.fields import identifier
    from mail_proxy.manager.tenants import RESERVED_IDS

    problem = field_check(identifier, "not a valid id")(text)
    if problem is not None:
        return problem
    if text.lower() in RESERVED_IDS:
        return f"'{text}' is a reserved command word of the CLI"
    return None


def _check_name(text: str) -> str | None:
    from mail_proxy.manager.fields import string

    return field_check(string(max_len=200), "not a valid name")(text)


def _check_path(text: str) -> str | None:
    from mail_proxy.manager.fields import url_path

    return field_check(url_path, "not a valid path")(text)


def _check_url(text: str) -> str | None:
    from mail_proxy.manager.fields import Bad, http_url

    try:
        http_url(text)
    except Bad:
        return "enter an absolute http:// or https:// URL, or nothing"
    return None


def _auth_object(v: FlagValues, method: str | None) -> dict[str, Any] | None:
    if method is None:
        return None
    if method not in ("none", "bearer", "basic"):
        raise CliExit(EXIT_USAGE, f"--auth: '{method}' is not one of none, bearer, basic")
    if method == "bearer":
        return {"method": "bearer", "token": v.auth_token}
    if method == "basic":
        return {"method": "basic", "user": v.auth_user, "password": v.auth_password}
    return {"method": "none"}


def _body(v: FlagValues, *, rate_base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API body of the flags that were given (PATCH semantics: only those)."""
    body: dict[str, Any] = {}
    if v.name is not None:
        body["name"] = v.name
    if v.base_url is not None:
        body["client_base_url"] = v.base_url or None  # empty: no reports
    if v.sync_path is not None:
        body["client_sync_path"] = v.sync_path
    if v.attachment_path is not None:
        body["client_attachment_path"] = v.attachment_path
    method = v.auth or ("bearer" if v.auth_token else
                        "basic" if v.auth_user or v.auth_password else None)
    auth = _auth_object(v, method)
    if auth is not None:
        body["client_auth"] = {k: val for k, val in auth.items() if val is not None}
    if v.signing_secret is not None:
        body["signing_secret"] = v.signing_secret or None
    if v.default_account is not None:
        body["default_account_id"] = v.default_account or None
    rates = {"per_minute": v.rate_per_minute, "per_hour": v.rate_per_hour,
             "per_day": v.rate_per_day}
    if any(r is not None for r in rates.values()):
        merged = dict(rate_base or {})
        merged.update({k: (r or None) for k, r in rates.items() if r is not None})
        body["rate_limits"] = merged
    if v.large_file_config is not None:
        try:
            body["large_file_config"] = loads_strict(v.large_file_config) \
                if v.large_file_config.strip() else None
        except ValueError:
            raise CliExit(EXIT_USAGE, "--large-file-config: not valid JSON") from None
    if v.active is not None:
        body["active"] = v.active
    return body


def tenant_rows(instance: str | None, active_only: bool
                ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``GET /tenants`` answer plus the table's extra columns per tenant."""
    from mail_proxy.manager import accounts, messages, tenants

    async def body(s: Session) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        listed = await tenants.list_tenants(s.core, active_only=active_only)
        per_tenant: dict[str, int] = {}
        for acc in await accounts.list_accounts(s.core, None):
            per_tenant[acc["tenant_id"]] = per_tenant.get(acc["tenant_id"], 0) + 1
        extra = {}
        stamp = time.time()
        for t in listed:
            counts = await messages.counts(s.core, t["id"])
            expiry = t["api_key_expires_at"]
            key = "no" if not t["has_api_key"] else (
                "expired" if expiry is not None and expiry <= stamp else "yes")
            extra[t["id"]] = {"accounts": per_tenant.get(t["id"], 0),
                              "queued": counts["queued"], "api_key": key}
        return {"ok": True, "tenants": listed}, extra

    return with_core(instance, body)


def _ask(v: FlagValues, tenant_id: str | None, asker: Asker,
         api_key: bool | None) -> tuple[str, bool]:
    """Prompts of cli.md §7.1, in order; fills ``v`` in place. Returns (id, api key)."""
    tid = asker.text("Tenant id", tenant_id, flag="ID", required=True, check=_check_id)
    v.name = asker.text("Display name", v.name, flag="--name", default=tid,
                        check=_check_name)
    v.base_url = asker.text("Application base URL (empty = no reports, no endpoint "
                            "attachments)", v.base_url, flag="--base-url", check=_check_url)
    if v.base_url:
        v.sync_path = asker.text("Sync path", v.sync_path, flag="--sync-path",
                                 default="/mail-proxy/sync", check=_check_path)
        v.attachment_path = asker.text("Attachment path", v.attachment_path,
                                       flag="--attachment-path",
                                       default="/mail-proxy/attachments", check=_check_path)
        implied = "bearer" if v.auth_token else "basic" if v.auth_user else None
        v.auth = asker.select("Authentication for calls to the application",
                              v.auth or implied, flag="--auth",
                              choices=["none", "bearer", "basic"], default="none")
        if v.auth == "bearer":
            v.auth_token = asker.text("Bearer token", v.auth_token, flag="--auth-token",
                                      required=True, secret=True)
        elif v.auth == "basic":
            v.auth_user = asker.text("Username", v.auth_user, flag="--auth-user",
                                     required=True)
            v.auth_password = asker.text("Password", v.auth_password, flag="--auth-password",
                                         required=True, secret=True)
        if v.signing_secret is None:
            v.generate_signing_secret = asker.confirm(
                "Generate a secret to sign delivery reports?", v.generate_signing_secret,
                default=False)
    wants_key = asker.confirm("Create an API key for this tenant?", api_key, default=True)
    return tid, wants_key


def _summary(tid: str, v: FlagValues, wants_key: bool) -> None:
    auth = v.auth or "none"
    rows = [("Tenant id", tid), ("Display name", v.name or tid),
            ("Base URL", v.base_url or "(none)")]
    if v.base_url:
        rows += [("Sync path", v.sync_path or "/mail-proxy/sync"),
                 ("Attachment path", v.attachment_path or "/mail-proxy/attachments"),
                 ("Authentication", auth + (f" (user {v.auth_user})" if auth == "basic" else "")),
                 ("Signing secret", "set" if v.signing_secret else
                  "generate" if v.generate_signing_secret else "none")]
    rows.append(("API key", "create" if wants_key else "no"))
    record_table(rows)


def create_tenant(instance: str | None, tenant_id: str | None, v: FlagValues, *,
                  api_key: bool | None, yes: bool, prompt: bool, json_output: bool) -> int:
    from mail_proxy.manager import tenants as manager

    v.read_stdin_secrets()
    if tenant_id is not None and (problem := _check_id(tenant_id)):
        raise CliExit(1, f"tenant id: {problem}")
    asker = Asker(prompt)
    tid, wants_key = _ask(v, tenant_id, asker, api_key)
    generated = None
    if v.generate_signing_secret and v.signing_secret is None:
        generated = v.signing_secret = secrets.token_urlsafe(32)
    if asker.asked:
        _summary(tid, v, wants_key)
    if not confirm_write(f"Create tenant '{tid}'?", asker=asker, yes=yes):
        err("nothing created")
        return 1
    body = {"id": tid, **_body(v)}

    async def run(s: Session) -> dict[str, Any]:
        from mail_proxy.errors import NotFound

        try:
            await manager.get_tenant(s.core, tid)
        except NotFound:
            pass
        else:
            raise CliExit(1, f"tenant '{tid}' already exists",
                          f"change it with: mail-proxy {s.config.name} tenants update {tid} …")

        async def action() -> tuple[int, Any]:
            tenant, _created, key = await manager.put_tenant(s.core, body, s.principal)
            answer: dict[str, Any] = {"ok": True, "created": True, "tenant": tenant,
                                      "api_key": key}
            if not wants_key:
                await manager.revoke_api_key(s.core, tid)
                answer["api_key"] = None
                answer["tenant"] = await manager.get_tenant(s.core, tid)
            return 201, answer

        return await logged(s, "POST /tenant", tid, body, action)

    answer = with_core(instance, run)
    if generated:
        answer["signing_secret"] = generated
    if json_output:
        print_json(answer)
        return 0
    out(f"created tenant '{tid}'")
    if answer["api_key"]:
        out(f"API key: {answer['api_key']}")
    if generated:
        out(f"Signing secret: {generated}")
    if answer["api_key"] or generated:
        err("note: these secrets cannot be shown again; store them now")
    return 0


def update_tenant(instance: str | None, tenant_id: str, v: FlagValues, *,
                  json_output: bool) -> None:
    from mail_proxy.manager import tenants as manager

    v.read_stdin_secrets()
    generated = None
    if v.generate_signing_secret and v.signing_secret is None:
        generated = v.signing_secret = secrets.token_urlsafe(32)

    async def run(s: Session) -> dict[str, Any]:
        current = await manager.get_tenant(s.core, tenant_id)
        body = _body(v, rate_base=current["rate_limits"])
        if not body:
            raise CliExit(EXIT_USAGE, "nothing to change: give at least one flag",
                          f"mail-proxy {s.config.name} tenants update --help")

        async def action() -> tuple[int, Any]:
            tenant = await manager.patch_tenant(s.core, tenant_id, body, s.principal)
            return 200, {"ok": True, "tenant": tenant}

        return await logged(s, "PATCH /tenant/{id}", tenant_id, body, action)

    answer = with_core(instance, run)
    if generated:
        answer["signing_secret"] = generated
    if json_output:
        print_json(answer)
        return
    out(f"updated tenant '{tenant_id}'")
    if generated:
        out(f"Signing secret: {generated}")
        err("note: the signing secret cannot be shown again; store it now")


def create_key(instance: str | None, tenant_id: str, expiry: int | None) -> dict[str, Any]:
    from mail_proxy.manager import tenants as manager

    async def run(s: Session) -> dict[str, Any]:
        payload = {"id": tenant_id, "expires_at": expiry}

        async def action() -> tuple[int, Any]:
            return 201, {"ok": True, **await manager.create_api_key(s.core, tenant_id, expiry)}

        return await logged(s, "POST /tenant/{id}/api-key", tenant_id, payload, action)

    return with_core(instance, run)


def revoke_key(instance: str | None, tenant_id: str) -> dict[str, Any]:
    from mail_proxy.manager import tenants as manager

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            revoked = await manager.revoke_api_key(s.core, tenant_id)
            return 200, {"ok": True, "tenant_id": tenant_id, "revoked": revoked}

        return await logged(s, "DELETE /tenant/{id}/api-key", tenant_id, {"id": tenant_id},
                            action)

    return with_core(instance, run)

