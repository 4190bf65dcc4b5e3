"""``mail-proxy NAME config …``: runtime settings (database) and process settings
(``config.toml``), cli.md §5 and settings.md."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import EXIT_USAGE, AppContext, CliExit, out, print_json, table
from mail_proxy.jsonfast import loads_strict

app = typer.Typer(rich_markup_mode=None, help="Runtime and process settings.",
                  no_args_is_help=True, add_completion=False)
KeyArg = Annotated[str, typer.Argument(help="Setting name.", show_default=False)]
# Process settings that `config set` may change; name and db_url are fixed at creation.
# shown by `config show`, fixed at creation (cli.md §4): never "unknown" (CLI hunt)
FIXED_KEYS = ("db_url", "name")
PROCESS_KEYS = ("host", "port", "log_level", "log_format", "shutdown_timeout", "db_pool_size")
PROCESS_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 8000, "log_level": "info",
                                    "log_format": "text", "shutdown_timeout": 30,
                                    "db_pool_size": 10}


def _instance(ctx: typer.Context) -> str | None:
    obj: AppContext = ctx.obj
    return obj.instance


def parse_value(text: str, default: Any) -> Any:
    """JSON when it parses (``true``, ``5``, ``[60,300]``), else the string; a list setting
    also takes ``60,300``."""
    try:
        value = loads_strict(text)
    except ValueError:
        pass
    else:
        # "5" for a list setting is the list of one ("5,10" already read as two)
        return [value] if isinstance(default, list) and not isinstance(value, list) else value
    if isinstance(default, list):
        items = [item.strip() for item in text.split(",") if item.strip()]
        return [int(i) if i.lstrip("-").isdigit() else i for i in items]
    return text


def _shown(name: str, value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


@app.command("show")
def show(ctx: typer.Context,
         json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")]
         = False) -> None:
    """Every setting with its value, default and source."""
    from mail_proxy import __version__
    from mail_proxy.cli.database import load_config, with_core
    from mail_proxy.manager import instance as manager
    from mail_proxy.settings import DEFAULTS, SECRET_SETTINGS, SETTING_NAMES

    config = load_config(_instance(ctx))
    settings = with_core(_instance(ctx), lambda s: manager.get_settings(s.core))
    process = {key: {"value": getattr(config, key), "source": config.sources.get(key, "default")}
               for key in PROCESS_KEYS}
    process["db_url"] = {"value": _redacted(config.db_url),
                         "source": config.sources.get("db_url", "default")}
    if json_output:
        print_json({"ok": True, "instance": {"name": config.name, "version": __version__,
                                             "started_at": None, "settings": settings},
                    "process": process})
        return
    rows = []
    for name in SETTING_NAMES:
        default = getattr(DEFAULTS, name)
        if name in SECRET_SETTINGS:
            is_set = settings[f"has_{name}"]
            rows.append([name, "set" if is_set else "unset", "unset",
                         "database" if is_set else "default"])
            continue
        value = settings[name]
        rows.append([name, _shown(name, value), _shown(name, default),
                     "default" if value == default else "database"])
    table(["SETTING", "VALUE", "DEFAULT", "SOURCE"], rows)
    out()
    table(["PROCESS SETTING", "VALUE", "DEFAULT", "SOURCE"],
          [[k, _shown(k, v["value"]), _shown(k, PROCESS_DEFAULTS.get(k)), v["source"]]
           for k, v in process.items()])


def _redacted(url: str) -> str:
    from mail_proxy.instance.db_urls import redact_url

    return redact_url(url)


@app.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -4
def set_(ctx: typer.Context, key: KeyArg,
         value: Annotated[str, typer.Argument(help="Value (JSON or text; - reads stdin for "
                                                   "secrets).", show_default=False)]) -> None:
    """Validate and store one setting."""
    from mail_proxy.settings import DEFAULTS, SECRET_SETTINGS, SETTING_NAMES

    if key in PROCESS_KEYS:
        _set_process(_instance(ctx), key, value)
        return
    _fixed_key(ctx, key)
    if key not in SETTING_NAMES:
        raise CliExit(EXIT_USAGE, f"unknown setting '{key}'",
                      f"mail-proxy {_instance(ctx)} config show lists them")
    if key in SECRET_SETTINGS:
        from mail_proxy.cli.dataview import secret_value

        parsed: Any = secret_value(value, key)
    else:
        parsed = parse_value(value, getattr(DEFAULTS, key))
    answer = _patch(_instance(ctx), {key: parsed})
    shown = "set" if key in SECRET_SETTINGS else _shown(key, answer[key])
    out(f"{key} = {shown} (running workers apply it within 5 s)")


@app.command("reset")
def reset(ctx: typer.Context, key: KeyArg) -> None:
    """Restore a setting's default."""
    from mail_proxy.settings import DEFAULTS, SECRET_SETTINGS, SETTING_NAMES

    if key in PROCESS_KEYS:
        _reset_process(_instance(ctx), key)
        return
    _fixed_key(ctx, key)
    if key not in SETTING_NAMES:
        raise CliExit(EXIT_USAGE, f"unknown setting '{key}'")
    _patch(_instance(ctx), {key: None})
    shown = "unset" if key in SECRET_SETTINGS else _shown(key, getattr(DEFAULTS, key))
    out(f"{key} = {shown} (default restored)")


def _patch(instance: str | None, body: dict[str, Any]) -> dict[str, Any]:
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.manager import instance as manager

    async def run(s: Session) -> dict[str, Any]:
        async def action() -> tuple[int, Any]:
            settings = await manager.patch_settings(s.core, body)
            return 200, {"ok": True, "instance": {"name": s.config.name,
                                                  "settings": settings}}

        answer = await logged(s, "PATCH /instance", None, body, action)
        return dict(answer["instance"]["settings"])

    return with_core(instance, run, invalid_exit=EXIT_USAGE)  # cli.md §5: a usage error


def _check_process(key: str, text: str) -> Any:
    from mail_proxy.instance.config import LOG_FORMATS, LOG_LEVELS, host_problem

    try:
        if key == "port":
            value: Any = int(text)
            if not 1 <= value <= 65535:
                raise ValueError
        elif key == "db_pool_size":
            value = int(text)
            if not 1 <= value <= 1000:
                raise ValueError
        elif key == "shutdown_timeout":
            value = float(text)
            if not 0 < value <= 3600:
                raise ValueError
            value = int(value) if value.is_integer() else value
        else:
            value = text.strip().lower() if key in ("log_level", "log_format") else text.strip()
            allowed = {"log_level": LOG_LEVELS, "log_format": LOG_FORMATS}.get(key)
            if (allowed and value not in allowed) or not value:
                raise ValueError
            if key == "host" and host_problem(value):  # the rule `start` applies on load
                raise ValueError
    except ValueError:
        rules = {"port": "an integer 1-65535", "db_pool_size": "an integer 1-1000",
                 "shutdown_timeout": "seconds, more than 0 and at most 3600",
                 "log_level": "debug, info, warning or error", "log_format": "text or json",
                 "host": "a host name or address"}
        raise CliExit(EXIT_USAGE, f"{key}: must be {rules[key]}") from None
    return value


def _folder(instance: str | None) -> Any:
    from mail_proxy.cli.database import load_config
    from mail_proxy.instance import paths

    # The folder alone, not the checked configuration: `config set port 8001` must be able
    # to repair a config.toml whose port (or any other value) no longer passes the checks.
    if instance and paths.name_problem(instance) is None \
            and (paths.instance_dir(instance) / "config.toml").is_file():
        return paths.existing_instance(instance)
    config = load_config(instance)
    if config.folder is None:
        raise CliExit(EXIT_USAGE, "this instance has no folder: process settings come from "
                                  "the GMP_* environment variables")
    return config.folder


def _set_process(instance: str | None, key: str, text: str) -> None:
    from mail_proxy.instance.config import update_config

    value = _check_process(key, text)
    update_config(_folder(instance), **{key: value})
    out(f"{key} = {value} in config.toml (applies at the next start: "
        f"mail-proxy restart {instance})")


def _reset_process(instance: str | None, key: str) -> None:
    from mail_proxy.instance.config import update_config

    folder = _folder(instance)
    update_config(folder, **{key: PROCESS_DEFAULTS[key]})
    out(f"{key} = {PROCESS_DEFAULTS[key]} in config.toml (applies at the next start)")


def _fixed_key(ctx: typer.Context, key: str) -> None:
    if key in FIXED_KEYS:
        from mail_proxy.instance.paths import instance_dir

        name = _instance(ctx)
        where = instance_dir(name) / "config.toml" if name else "config.toml"
        raise CliExit(EXIT_USAGE, f"{key} is fixed when an instance is created",
                      f"edit {where} deliberately to change it (with the instance stopped)")
