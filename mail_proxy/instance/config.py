"""Process settings of one worker: flags > GMP_* environment > config.toml > defaults.

Secrets (admin token, database password, key ring) never live in ``config.toml``; they have
their own 0600 files in the instance folder (cli.md §2, settings.md §3).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import secrets
import shutil
import socket
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mail_proxy.errors import ConfigurationError, InstanceError
from mail_proxy.instance import paths
from mail_proxy.instance.database import create_database
from mail_proxy.instance.db_urls import check_db_url, split_password
from mail_proxy.instance.keyring import copy_key_file, create_key_file

DEFAULT_NAME = "mail-proxy"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_SHUTDOWN_TIMEOUT = 30
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
CONFIG_KEYS = ("name", "host", "port", "db_url", "log_level", "log_format", "shutdown_timeout",
               "db_pool_size")


@dataclass
class ProcessConfig:
    name: str
    folder: Path | None
    host: str
    port: int
    db_url: str
    log_level: str
    log_format: str
    shutdown_timeout: float
    db_pool_size: int
    api_token: str = field(repr=False)
    cache_dir: Path | None
    db_password: str | None = field(default=None, repr=False)
    # where each process setting came from: "flag", "env", "config.toml" or "default"
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"


def url_host(host: str) -> str:
    """The host to put in a URL a client can use (wildcard binds are reached on loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def probe_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host`` (wildcards via loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def read_toml(folder: Path) -> dict[str, Any]:
    path = folder / "config.toml"
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise InstanceError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; an editor saved it in Latin-1, say
        raise ConfigurationError(f"{path} is not valid TOML: byte {exc.start} is not "
                                 "UTF-8") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_toml(folder: Path, values: dict[str, Any]) -> None:
    name = values.get("name", folder.name)
    lines = [f'# mail-proxy instance "{name}"; secrets live in api_token, encryption.key, '
             "db_password"]
    keys = [k for k in CONFIG_KEYS if k in values] + [k for k in values if k not in CONFIG_KEYS]
    lines += [f"{key} = {_toml_value(values[key])}" for key in keys if values[key] is not None]
    paths.write_private(folder / "config.toml", "\n".join(lines) + "\n")


def update_config(folder: Path, **changes: Any) -> None:
    """Change some keys of config.toml; two commands changing different keys at once both
    land (each reads the file under the lock the other releases after writing)."""
    from mail_proxy.filelock import locked

    with locked(folder / "config.toml"):
        values = read_toml(folder)
        values.update({k: v for k, v in changes.items() if v is not None})
        write_toml(folder, values)


def _env_port(raw: str, source: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise _invalid("port", raw, source, "1-65535")
    return port


# The rules `config set` applies, applied again to whatever config.toml holds: a hand edit
# must not reach the supervisor (a NaN drain budget kills the worker without draining).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
HOST_RULE = "a host name or an IP address"
TIMEOUT_RULE = "seconds, more than 0 and at most 3600"
POOL_RULE = "an integer 1-1000"


def host_problem(host: object) -> str | None:
    """Why ``host`` cannot be a bind address, or None (syntax only, nothing is resolved)."""
    if not isinstance(host, str) or not host:
        return f"must be {HOST_RULE}"
    import ipaddress  # only when a host is checked: `mail-proxy --help` does not pay for it

    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return f"must be {HOST_RULE}"
    return None


def check_host(host: str) -> str:
    """``host`` when it is well formed and resolves; otherwise exit 2 naming it."""
    problem = host_problem(host)
    if problem:
        raise ConfigurationError(f"invalid host '{host}': {problem}")
    _resolve(host, 0)
    return host


def _resolve(host: str, port: int) -> list[Any]:
    try:
        return socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        # not "port in use": the name itself is the problem, and no port will do
        raise ConfigurationError(f"cannot use host '{host}': {exc.strerror}",
                                 hint="give a host name that resolves, or an IP address"
                                 ) from None


def _shown(value: Any) -> str:
    """A value as config.toml spells it (``nan``, ``true``, ``["a"]``)."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool | int | float):
        return _toml_value(value)
    return json.dumps(value, default=str)


def _invalid(key: str, value: Any, where: str, rule: str) -> ConfigurationError:
    hint = None
    if where.endswith(".toml"):
        name = Path(where).parent.name
        hint = f"mail-proxy {name} config set {key} VALUE, or edit {where}"
    return ConfigurationError(f"invalid {key} {_shown(value)} in {where}: use {rule}",
                              hint=hint)


def _checked_host(value: Any, where: str) -> str:
    if host_problem(value):
        raise _invalid("host", value, where, HOST_RULE)
    return str(value)


def _checked_timeout(value: Any, where: str) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0 < number <= 3600:
        raise _invalid("shutdown_timeout", value, where, TIMEOUT_RULE)
    return float(number)


def _checked_pool(value: Any, where: str) -> int:
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not 1 <= value <= 1000:
        raise _invalid("db_pool_size", value, where, POOL_RULE)
    return int(value)


def _where(source: str, env_name: str | None, folder: Path | None) -> str:
    if source == "env" and env_name:
        return env_name
    if source == "config.toml" and folder is not None:
        return str(folder / "config.toml")
    return {"flag": "the command line"}.get(source, source)


def check_toml_address(toml: dict[str, Any], folder: Path) -> tuple[str, int]:
    """(host, port) of config.toml, checked: what ``list`` shows must be a usable URL."""
    where = str(folder / "config.toml")
    host = _checked_host(toml.get("host", DEFAULT_HOST), where)
    port = toml.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _invalid("port", port, where, "an integer 1-65535")
    return host, port


def _pick(sources: dict[str, str], key: str, flag: Any, env_name: str | None,
          toml: dict[str, Any], default: Any) -> Any:
    env = os.environ.get(env_name) if env_name else None
    if flag is not None:
        sources[key] = "flag"
        return flag
    if env not in (None, ""):
        sources[key] = "env"
        return env
    if key in toml:
        sources[key] = "config.toml"
        return toml[key]
    sources[key] = "default"
    return default


def _db_url(sources: dict[str, str], toml: dict[str, Any], folder: Path | None) -> str:
    env_url, env_path = os.environ.get("GMP_DB_URL"), os.environ.get("GMP_DB_PATH")
    if env_url and env_path:
        raise ConfigurationError("GMP_DB_URL and GMP_DB_PATH are both set: keep only one")
    if env_url:
        sources["db_url"] = "env"
        return check_db_url(env_url)
    if env_path:
        if not os.path.isabs(env_path):
            raise ConfigurationError(f"GMP_DB_PATH must be an absolute path, not '{env_path}'")
        sources["db_url"] = "env"
        return "sqlite://" + env_path
    if "db_url" in toml:
        sources["db_url"] = "config.toml"
        return check_db_url(str(toml["db_url"]))
    if folder is None:
        raise ConfigurationError("no database: set GMP_DB_URL or GMP_DB_PATH")
    sources["db_url"] = "default"
    return "sqlite://" + str(folder / "mail_service.db")


def stored_database(name: str) -> tuple[str, str | None]:
    """(database URL, PostgreSQL password) as the instance's own files say, never from GMP_*
    variables or PGPASSWORD: what `status` counts messages in (CLI hunt: a GMP_DB_PATH in
    the caller's shell made it count another instance's database under this one's name)."""
    folder = paths.existing_instance(name)
    toml = read_toml(folder)
    url = (check_db_url(str(toml["db_url"])) if "db_url" in toml
           else "sqlite://" + str(folder / "mail_service.db"))
    return url, _read_secret(folder / "db_password")


def _read_secret(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigurationError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:  # a folder where the file belongs, no permission
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    return value or None


MIN_ADMIN_TOKEN = 24  # security.md: a guessable admin token opens every tenant's data


def check_admin_token(token: str, name: str, *, from_env: bool) -> None:
    """Refuse a token shorter than MIN_ADMIN_TOKEN, or one that cannot be sent in an HTTP
    header (it is compared with X-API-Token / Authorization: visible ASCII only)."""
    if len(token) < MIN_ADMIN_TOKEN:
        problem = f"has {len(token)} characters: at least {MIN_ADMIN_TOKEN} are needed"
    elif any(not "\x21" <= char <= "\x7e" for char in token):
        problem = ("holds spaces, control or non-ASCII characters: no client could send it "
                   "in an HTTP header")
    else:
        return
    where = "GMP_API_TOKEN" if from_env else "the api_token file"
    hint = ("set GMP_API_TOKEN to a longer random text, e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'" if from_env
            else f"mail-proxy {name} token --regenerate")
    raise ConfigurationError(f"the admin token in {where} {problem}", hint=hint)


def resolve_process_config(name: str | None, *, host: str | None = None,
                           port: int | None = None, need_token: bool = True) -> ProcessConfig:
    """The configuration a worker for ``name`` would run with (settings.md §3)."""
    env_db = bool(os.environ.get("GMP_DB_URL") or os.environ.get("GMP_DB_PATH"))
    name = name or os.environ.get("GMP_INSTANCE") or DEFAULT_NAME
    folder: Path | None = None
    if paths.name_problem(name) is None and (paths.instance_dir(name) / "config.toml").is_file():
        folder = paths.existing_instance(name)
    elif not env_db:
        raise InstanceError(f"instance '{name}' not found",
                            hint="create it with `mail-proxy start NAME`, or set GMP_DB_URL")
    toml = read_toml(folder) if folder else {}
    src: dict[str, str] = {}
    raw_host = _pick(src, "host", host, "GMP_HOST", toml, DEFAULT_HOST)
    chosen_host = _checked_host(raw_host, _where(src["host"], "GMP_HOST", folder))
    raw_port = _pick(src, "port", port, "GMP_PORT", toml, DEFAULT_PORT)
    chosen_port = _env_port(str(raw_port), _where(src["port"], "GMP_PORT", folder))
    log_level = str(_pick(src, "log_level", None, "GMP_LOG_LEVEL", toml, "info")).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigurationError(f"invalid log_level '{log_level}': use one of "
                                 + ", ".join(LOG_LEVELS))
    log_format = str(_pick(src, "log_format", None, None, toml, "text"))
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(f"invalid log_format '{log_format}': use text or json")
    raw = _pick(src, "shutdown_timeout", None, None, toml, DEFAULT_SHUTDOWN_TIMEOUT)
    shutdown = _checked_timeout(raw, _where(src["shutdown_timeout"], None, folder))
    raw = _pick(src, "db_pool_size", None, None, toml, 10)
    pool = _checked_pool(raw, _where(src["db_pool_size"], None, folder))
    db_url = _db_url(src, toml, folder)
    token = os.environ.get("GMP_API_TOKEN") or (
        _read_secret(folder / "api_token") if folder else None)
    if not token and need_token:
        if folder is not None:
            raise ConfigurationError(f"no admin token: {folder / 'api_token'} is empty or "
                                     "missing, and GMP_API_TOKEN is not set",
                                     hint=f"mail-proxy {name} token --regenerate")
        raise ConfigurationError("no admin token: set GMP_API_TOKEN")
    if token and need_token:
        check_admin_token(token, name, from_env=bool(os.environ.get("GMP_API_TOKEN")))
    password = (_read_secret(folder / "db_password") if folder else None) or \
        os.environ.get("PGPASSWORD") or None
    cache_env = os.environ.get("GMP_CACHE_DIR")
    cache_dir = Path(cache_env) if cache_env else (folder / "cache" if folder else None)
    return ProcessConfig(name=str(toml.get("name", name)) if folder else name, folder=folder,
                         host=chosen_host, port=chosen_port, db_url=db_url, log_level=log_level,
                         log_format=log_format, shutdown_timeout=shutdown, db_pool_size=pool,
                         api_token=token or "", cache_dir=cache_dir, db_password=password,
                         sources=src)


def port_free(host: str, port: int) -> bool:
    """True when a server could bind ``host:port`` now (same options uvicorn uses); a host
    that does not resolve is a ConfigurationError, not a busy port."""
    family, kind, proto, _, address = _resolve(host, port)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            # an address this host does not have, a privileged port: no --port fixes that
            raise ConfigurationError(f"cannot listen on {host}:{port}: "
                                     f"{exc.strerror or exc}") from None
    return True


def configured_ports(exclude: str | None = None) -> set[int]:
    ports: set[int] = set()
    for other in paths.instance_names():
        if other == exclude:
            continue
        try:
            value = read_toml(paths.instance_dir(other)).get("port")
        except (ConfigurationError, InstanceError):
            continue
        if isinstance(value, int):
            ports.add(value)
    return ports


def choose_port(host: str, exclude: str | None = None, start: int = DEFAULT_PORT) -> int:
    taken = configured_ports(exclude)
    for port in range(start, 65536):
        if port not in taken and port_free(host, port):
            return port
    raise ConfigurationError(f"no free port from {start} upward on {host}")


class InstanceExists(ConfigurationError):
    """The instance is there already (possibly made a moment ago by a concurrent ``start``)."""


@contextlib.contextmanager
def _creation_lock(root: Path) -> Iterator[None]:
    """Serialise instance creation under one home: two ``start NEW`` at once must not both
    write a token and a key ring into the same folder (the second would void the first)."""
    with paths.os_errors("lock", root):
        fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        yield
    finally:
        os.close(fd)


def create_instance(name: str, host: str, port: int | None,
                    db_url: str | None, *, key_file: Path | None = None) -> ProcessConfig:
    """Create the folder and files of a new instance; return its configuration."""
    paths.validate_name(name)
    check_host(host)  # before anything is written: a refused host leaves no folder
    folder = paths.instance_dir(name)
    password = None
    if db_url:  # checked before anything is written: a refused URL leaves no folder
        db_url, password = split_password(check_db_url(db_url))
    else:
        db_url = "sqlite://" + str(folder / "mail_service.db")
    with _creation_lock(paths.ensure_home()):
        if (folder / "config.toml").exists():
            raise InstanceExists(f"instance '{name}' already exists")
        _refuse_orphaned_files(folder, name)
        port = _fill_folder(folder, name, host, port, db_url, password, key_file)
    return resolve_process_config(name, host=host, port=port)


# What makes a folder an instance's, besides config.toml: creating "a new instance" over them
# would replace the key ring and token, and a failed creation used to remove the folder with
# its database (ops hunt, 2026-11-25: a config.toml moved aside, then `start NAME`).
_INSTANCE_FILES = ("mail_service.db", "encryption.key", "api_token", "db_password",
                   "supervisor.json")


def _refuse_orphaned_files(folder: Path, name: str) -> None:
    found = [f for f in _INSTANCE_FILES if (folder / f).exists()]
    if found:
        raise ConfigurationError(
            f"instance '{name}' has no config.toml, but its folder {folder} still holds "
            + ", ".join(found),
            hint="put config.toml back (a copy, or the keys name, host, port and db_url), or "
                 "move the folder away to create a new instance under this name")


def _fill_folder(folder: Path, name: str, host: str, port: int | None, db_url: str,
                 password: str | None, key_file: Path | None) -> int:
    existed = folder.exists()
    paths.make_private_dir(folder)
    try:
        paths.check_private(folder)
        if port is None:
            port = choose_port(host, exclude=name)
        for sub in ("logs", "cache"):
            paths.make_private_dir(folder / sub)
        if key_file is not None:
            copy_key_file(key_file, folder)  # joining a shared database: its existing ring
        else:
            create_key_file(folder)
        paths.write_private(folder / "api_token", new_admin_token() + "\n")
        if password:
            paths.write_private(folder / "db_password", password + "\n")
        create_database(db_url)  # from now on, a missing SQLite file is an error
        # config.toml last: its presence is what makes the folder an instance
        write_toml(folder, {"name": name, "host": host, "port": port, "db_url": db_url,
                            "log_level": "info", "log_format": "text", "shutdown_timeout": 30,
                            "db_pool_size": 10})
    except BaseException:
        if not existed:  # half an instance (say, an unreadable --key-file) is not kept
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return port


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)  # 32 random bytes, URL-safe base64 without padding
