"""Bodies of the ``accounts`` commands: flags (and prompts, cli.md §7.2) to the API body of
``POST /account`` / ``PATCH /account/{id}``, the manager call, and ``accounts test``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mail_proxy.cli.application import EXIT_USAGE, CliExit, err, out, print_json
from mail_proxy.cli.asking import Asker, confirm_write, field_check
from mail_proxy.cli.database import FLAG_NAMES, Session, logged, with_core
from mail_proxy.cli.dataview import one_of, record_table, secret_value

TLS_MODES = ("tls", "starttls", "none")
LIMIT_BEHAVIORS = ("defer", "reject")

FLAG_NAMES.update({
    "host": "--host", "port": "--port", "tls_mode": "--tls-mode", "user": "--user",
    "password": "--password", "tls_verify": "--tls-verify", "tls_ca_file": "--tls-ca-file",
    "max_connections": "--max-connections", "batch_size": "--batch-size", "ttl": "--ttl",
    "limit_per_minute": "--limit-per-minute", "limit_per_hour": "--limit-per-hour",
    "limit_per_day": "--limit-per-day", "limit_behavior": "--limit-behavior",
    "is_pec": "--pec", "imap_host": "--imap-host", "imap_port": "--imap-port",
    "imap_user": "--imap-user", "imap_password": "--imap-password",
    "imap_folder": "--imap-folder", "imap_tls": "--imap-tls",
})


@dataclass
class AccountFlags:
    host: str | None = None
    port: int | None = None
    tls_mode: str | None = None
    user: str | None = None
    password: str | None = None
    tls_verify: bool | None = None
    tls_ca_file: str | None = None
    max_connections: int | None = None
    batch_size: int | None = None
    ttl: int | None = None
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: str | None = None
    default: bool | None = None
    pec: bool | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str | None = None
    imap_tls: bool | None = None

    def read_stdin_secrets(self) -> None:
        self.check_words()
        self.password = secret_value(self.password, "--password")
        self.imap_password = secret_value(self.imap_password, "--imap-password")

    def check_words(self) -> None:
        """The closed-set flags: a word outside the set is exit 2 (empty clears the field)."""
        one_of(self.tls_mode or None, "--tls-mode", TLS_MODES)
        one_of(self.limit_behavior or None, "--limit-behavior", LIMIT_BEHAVIORS)

    def body(self) -> dict[str, Any]:
        """API fields of the given flags; 0 limits mean unlimited (null), '' clears."""
        values = asdict(self)
        values.pop("default")
        values["is_pec"] = values.pop("pec")
        body: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name.startswith("limit_per_") and value == 0:
                value = None
            if value == "" and name not in ("host",):
                value = None
            body[name] = value
        return body


def _check_id(text: str) -> str | None:
    from mail_proxy.manager.fields import identifier

    return field_check(identifier, "not a valid id")(text)


def _check_host(text: str) -> str | None:
    from mail_proxy.manager.fields import host

    return field_check(host, "not a valid host name")(text)


def _max_connections(given: int | None, asker: Asker, pool_default: int) -> int | None:
    """None (stored null) follows the instance's ``smtp_max_connections``, as an account
    created through the API does (api.md §6.1); only a flag or a different answer pins a
    number. Storing the prompt's default pinned every CLI account to 3."""
    if given is not None:
        return given
    value = asker.integer("Maximum connections", None, flag="--max-connections",
                          default=pool_default, low=1, high=50)
    return None if value == pool_default else value


def _ask(f: AccountFlags, account_id: str | None, asker: Asker, has_default: bool,
         test: bool | None, pool_default: int) -> tuple[str, bool]:
    aid = asker.text("Account id", account_id, flag="ID", required=True, check=_check_id)
    f.host = asker.text("SMTP host", f.host, flag="--host", required=True, check=_check_host)
    f.port = asker.integer("Port", f.port, flag="--port", default=587, low=1, high=65535)
    f.tls_mode = asker.select("TLS mode", f.tls_mode, flag="--tls-mode",
                              choices=list(TLS_MODES),
                              default="tls" if f.port == 465 else "starttls")
    f.user = asker.text("Username (empty = no authentication)", f.user, flag="--user")
    if f.user:
        f.password = asker.text("Password", f.password, flag="--password", required=True,
                                secret=True)
    f.max_connections = _max_connections(f.max_connections, asker, pool_default)
    f.limit_per_minute = asker.integer("Messages per minute (0 = unlimited)",
                                       f.limit_per_minute, flag="--limit-per-minute",
                                       default=0, low=0)
    f.limit_per_hour = asker.integer("Messages per hour (0 = unlimited)", f.limit_per_hour,
                                     flag="--limit-per-hour", default=0, low=0)
    f.limit_per_day = asker.integer("Messages per day (0 = unlimited)", f.limit_per_day,
                                    flag="--limit-per-day", default=0, low=0)
    if any((f.limit_per_minute, f.limit_per_hour, f.limit_per_day)):
        f.limit_behavior = asker.select("When a limit is reached", f.limit_behavior,
                                        flag="--limit-behavior", choices=list(LIMIT_BEHAVIORS),
                                        default="defer")
    f.default = asker.confirm("Make this the tenant's default account?", f.default,
                              default=not has_default)
    wants_test = asker.confirm("Test the connection now?", test, default=True)
    return aid, wants_test


def _summary(aid: str, f: AccountFlags, pool_default: int) -> None:
    rows = [("Account id", aid), ("SMTP host", f.host or ""), ("Port", str(f.port)),
            ("TLS mode", f.tls_mode or ""),
            ("Username", f.user or "(no authentication)")]
    if f.user:
        rows.append(("Password", "set" if f.password else "not set"))
    connections = (f"{pool_default} (instance default)" if f.max_connections is None
                   else str(f.max_connections))
    rows += [("Maximum connections", connections),
             ("Limits (m/h/d)", "/".join(str(v or 0) for v in (
                 f.limit_per_minute, f.limit_per_hour, f.limit_per_day))),
             ("Default account", "yes" if f.default else "no")]
    record_table(rows)


async def _set_default(s: Session, tenant: str, aid: str, make_default: bool | None) -> None:
    """``--default/--no-default`` is a tenant field: ``default_account_id`` (api.md §7)."""
    from mail_proxy.manager import tenants

    if make_default is None:
        return
    current = (await tenants.get_tenant(s.core, tenant))["default_account_id"]
    if make_default and current != aid:
        body: dict[str, Any] = {"default_account_id": aid}
    elif not make_default and current == aid:
        body = {"default_account_id": None}
    else:
        return

    async def action() -> tuple[int, Any]:
        tenant_doc = await tenants.patch_tenant(s.core, tenant, body, s.principal)
        return 200, {"ok": True, "tenant": tenant_doc}

    await logged(s, "PATCH /tenant/{id}", tenant, body, action)


def create_account(instance: str | None, tenant: str, account_id: str | None,
                   f: AccountFlags, *, test: bool | None, yes: bool, prompt: bool,
                   json_output: bool) -> int:
    from mail_proxy.manager import accounts, tenants

    f.read_stdin_secrets()
    if account_id is not None and (problem := _check_id(account_id)):
        raise CliExit(1, f"account id: {problem}")

    async def defaults(s: Session) -> tuple[bool, int]:
        has_default = (await tenants.get_tenant(s.core, tenant))["default_account_id"]
        return has_default is not None, int(s.core.settings.smtp_max_connections)

    asker = Asker(prompt)
    tenant_has_default, pool_default = with_core(instance, defaults)
    aid, wants_test = _ask(f, account_id, asker, tenant_has_default, test, pool_default)
    if asker.asked:
        _summary(aid, f, pool_default)
    if not confirm_write(f"Create account '{aid}'?", asker=asker, yes=yes):
        err("nothing created")
        return 1
    body = {"id": aid, "tenant_id": tenant, **f.body()}

    async def run(s: Session) -> dict[str, Any]:
        from mail_proxy.errors import NotFound

        try:
            await accounts.get_account(s.core, tenant, aid)
        except NotFound:
            pass
        else:
            raise CliExit(1, f"account '{aid}' already exists",
                          f"change it with: mail-proxy {s.config.name} {tenant} accounts "
                          f"update {aid} …")

        async def action() -> tuple[int, Any]:
            account, _created = await accounts.put_account(s.core, body, s.principal, tenant)
            return 201, {"ok": True, "created": True, "account": account}

        answer = await logged(s, "POST /account", tenant, body, action)
        await _set_default(s, tenant, aid, f.default)
        answer["account"] = await accounts.get_account(s.core, tenant, aid)
        return answer

    answer = with_core(instance, run)
    if json_output and not wants_test:
        print_json(answer)
        return 0
    if not json_output:
        out(f"created account '{aid}'")
    if wants_test:
        try:
            return run_test(instance, tenant, aid, to=None, sender=None, timeout=15.0,
                            json_output=json_output, created=answer if json_output else None)
        except CliExit as exc:
            # exit 1 stays (cli.md §7.2: a failed test keeps the account and exits 1), but
            # the line must say the account exists: a script or a re-run would assume it
            # was not created and fail with "already exists"
            where = f"mail-proxy {instance} {tenant} accounts"
            raise CliExit(exc.code, f"{exc.message}; account '{aid}' was created and kept",
                          f"fix it with: {where} update {aid} …, then retest with: "
                          f"{where} test {aid}") from None
    return 0


def update_account(instance: str | None, tenant: str, account_id: str, f: AccountFlags, *,
                   json_output: bool) -> None:
    from mail_proxy.manager import accounts

    f.read_stdin_secrets()
    body = f.body()
    if not body and f.default is None:
        raise CliExit(EXIT_USAGE, "nothing to change: give at least one flag")

    async def run(s: Session) -> dict[str, Any]:
        answer: dict[str, Any] = {"ok": True}
        if body:
            async def action() -> tuple[int, Any]:
                account = await accounts.patch_account(s.core, tenant, account_id, body,
                                                       s.principal)
                return 200, {"ok": True, "account": account}

            await logged(s, "PATCH /account/{id}", tenant, {"id": account_id, **body}, action)
        else:
            await accounts.get_account(s.core, tenant, account_id)  # 404 before the tenant
        await _set_default(s, tenant, account_id, f.default)
        answer["account"] = await accounts.get_account(s.core, tenant, account_id)
        return answer

    answer = with_core(instance, run)
    if json_output:
        print_json(answer)
    else:
        out(f"updated account '{account_id}'")


def delete_account(instance: str | None, tenant: str, account_id: str,
                   force: bool) -> dict[str, Any]:
    from mail_proxy.errors import Conflict
    from mail_proxy.manager import accounts

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            n = await accounts.delete_account(s.core, tenant, account_id, force=force,
                                              principal=s.principal)
            return 200, {"ok": True, "cancelled_messages": n}

        return await logged(s, "DELETE /account/{id}", tenant,
                            {"id": account_id, "tenant_id": tenant, "force": force}, action)

    try:
        return with_core(instance, run)
    except Conflict as exc:
        counts = ", ".join(f"{n} {k}" for k, n in (exc.detail or {}).items() if n)
        raise CliExit(1, f"{exc.message} ({counts})",
                      "pass --force to delete anyway: queued and deferred messages are "
                      "cancelled; sending ones not yet in an SMTP transaction end "
                      "account_not_found") from None


def _sender(explicit: str | None, user: str | None) -> str:
    from mail_proxy.manager.fields import Bad, address

    for candidate in (explicit, user):
        if candidate:
            try:
                return address(candidate)
            except Bad:
                if candidate is explicit:
                    raise CliExit(EXIT_USAGE, f"--from: '{candidate}' is not an address") \
                        from None
    raise CliExit(EXIT_USAGE, "the test message needs a sender: the account user is not an "
                              "address", "pass --from ADDRESS")


def _print_step(step: Any) -> None:
    mark = "ok  " if step.ok else "FAIL"
    text = step.detail if step.ok else f"{step.code}: {step.detail}"
    out(f"{mark} {step.name:<22} {step.seconds * 1000:7.0f} ms  {text}")


def run_test(instance: str | None, tenant: str, account_id: str, *, to: str | None,
             sender: str | None, timeout: float, json_output: bool,
             created: dict[str, Any] | None = None) -> int:
    from mail_proxy.delivery.probe import ProbeTarget, probe
    from mail_proxy.manager import accounts
    from mail_proxy.manager.validation import message_id_domain

    async def run(s: Session) -> list[Any]:
        acc = await accounts.account_secrets(s.core, tenant, account_id)
        target = ProbeTarget(host=acc["host"], port=int(acc["port"]), tls_mode=acc["tls_mode"],
                             user=acc["user"], password=acc["password"],
                             tls_verify=acc["tls_verify"], tls_ca_file=acc["tls_ca_file"])
        mail_from = _sender(sender, acc["user"]) if to else None
        return await probe(target, timeout=timeout, mail_from=mail_from, rcpt=to,
                           ehlo_name=message_id_domain(s.core.settings),
                           on_step=None if json_output else _print_step)

    steps = with_core(instance, run)
    ok = all(step.ok for step in steps)
    if json_output:
        doc: dict[str, Any] = {"ok": ok, "steps": [step.as_dict() for step in steps]}
        if created is not None:
            # "ok" answers the whole command, which exits 1 when the test failed
            doc = {**created, "ok": ok, "test": doc}
        print_json(doc)
    if ok:
        return 0
    failed = steps[-1]
    raise CliExit(1, f"connection test failed at {failed.name}: {failed.code}: "
                     f"{failed.detail}")
