"""Instance folders, file modes, names and the process-settings precedence."""

from __future__ import annotations

import base64
import os
import socket
import stat
import tomllib
from pathlib import Path

import pytest

from mail_proxy.errors import ConfigurationError, InstanceError
from mail_proxy.instance import paths
from mail_proxy.instance.config import (
    choose_port,
    create_instance,
    resolve_process_config,
)
from mail_proxy.instance.db_urls import redact_url, split_password


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_instance_modes_and_files() -> None:
    config = create_instance("main", "127.0.0.1", 18080, None)
    folder = paths.instance_dir("main")
    assert mode(paths.home()) == 0o700 and mode(folder) == 0o700
    for name in ("config.toml", "api_token", "encryption.key"):
        assert mode(folder / name) == 0o600, name
    key = (folder / "encryption.key").read_text().strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    token = (folder / "api_token").read_text().strip()
    assert len(token) == 43 and "=" not in token and config.api_token == token
    toml = tomllib.loads((folder / "config.toml").read_text())
    assert toml == {"name": "main", "host": "127.0.0.1", "port": 18080,
                    "db_url": f"sqlite://{folder}/mail_service.db", "log_level": "info",
                    "log_format": "text", "shutdown_timeout": 30, "db_pool_size": 10}
    assert token not in repr(config)


def test_group_readable_folder_is_refused_with_hint() -> None:
    create_instance("main", "127.0.0.1", 18081, None)
    folder = paths.instance_dir("main")
    folder.chmod(0o750)
    with pytest.raises(ConfigurationError) as info:
        paths.existing_instance("main")
    assert info.value.hint == f"chmod 700 {folder}"


@pytest.mark.parametrize("name", ["Main", "-x", "a b", "list", "tenants", "send", "x" * 64])
def test_invalid_instance_names(name: str) -> None:
    assert paths.name_problem(name)


def test_password_moves_to_db_password_file() -> None:
    create_instance("pg", "127.0.0.1", 18082, "postgresql://ann:s3cret@db.local:5432/mail")
    folder = paths.instance_dir("pg")
    assert (folder / "db_password").read_text().strip() == "s3cret"
    assert mode(folder / "db_password") == 0o600
    assert "s3cret" not in (folder / "config.toml").read_text()
    config = resolve_process_config("pg")
    assert config.db_url == "postgresql://ann@db.local:5432/mail"
    assert config.db_password == "s3cret"
    assert split_password("postgres://u:p@h/d") == ("postgres://u@h/d", "p")
    assert redact_url("postgresql://u:pw@h:1/d") == "postgresql://u@h:1/d"
    assert split_password("postgresql://u@h/d?password=p%26q&sslmode=require") == \
        ("postgresql://u@h/d?sslmode=require", "p&q")
    assert redact_url("postgresql://u@h/d?sslmode=require&Password=x&sslpassword=y&a=1") == \
        "postgresql://u@h/d?sslmode=require&a=1"
    assert redact_url("postgresql://u@h/d?password=x") == "postgresql://u@h/d"


def test_precedence_flag_env_toml_default(monkeypatch: pytest.MonkeyPatch) -> None:
    create_instance("main", "127.0.0.1", 18083, None)
    assert resolve_process_config("main").port == 18083
    monkeypatch.setenv("GMP_PORT", "18084")
    monkeypatch.setenv("GMP_LOG_LEVEL", "debug")
    config = resolve_process_config("main")
    assert (config.port, config.log_level, config.sources["port"]) == (18084, "debug", "env")
    config = resolve_process_config("main", port=18085, host="0.0.0.0")
    assert (config.port, config.host, config.url) == (18085, "0.0.0.0", "http://127.0.0.1:18085")
    assert config.shutdown_timeout == 30 and config.sources["shutdown_timeout"] == "config.toml"


def test_environment_only_instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GMP_DB_PATH", str(tmp_path / "x.db"))
    with pytest.raises(ConfigurationError, match="no admin token: set GMP_API_TOKEN"):
        resolve_process_config(None)
    monkeypatch.setenv("GMP_API_TOKEN", "t0ken")
    with pytest.raises(ConfigurationError, match="has 5 characters: at least 24"):
        resolve_process_config(None)
    assert resolve_process_config(None, need_token=False).api_token == "t0ken"
    monkeypatch.setenv("GMP_API_TOKEN", "t" * 24)
    config = resolve_process_config(None)
    assert (config.name, config.folder, config.db_url, config.port) == (
        "mail-proxy", None, f"sqlite://{tmp_path}/x.db", 8000)
    monkeypatch.setenv("GMP_DB_URL", "sqlite:///y.db")
    with pytest.raises(ConfigurationError, match="both set"):
        resolve_process_config(None)


def test_unknown_instance_without_database_variables() -> None:
    with pytest.raises(InstanceError):
        resolve_process_config("ghost")


def test_port_choice_skips_busy_and_configured_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        create_instance("one", "127.0.0.1", port + 1, None)
        assert choose_port("127.0.0.1", start=port) not in (port, port + 1)


def test_current_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.read_current() == (None, None)
    paths.write_current("main", "acme")
    assert paths.read_current() == ("main", "acme")
    assert mode(paths.home() / ".current") == 0o600
    paths.write_current(None, "acme")
    assert paths.read_current() == (None, "acme")
    paths.write_current(None, None)
    assert not (paths.home() / ".current").exists()
    assert os.environ["MAIL_PROXY_HOME"] == str(paths.home())


def test_a_short_or_missing_admin_token_file_is_refused_with_the_way_out() -> None:
    create_instance("tok", "127.0.0.1", 18086, None)
    token_file = paths.instance_dir("tok") / "api_token"
    token_file.write_text("short\n")
    with pytest.raises(ConfigurationError, match="has 5 characters") as info:
        resolve_process_config("tok")
    assert info.value.hint == "mail-proxy tok token --regenerate"
    token_file.write_text("")
    with pytest.raises(ConfigurationError, match="api_token is empty or missing") as info:
        resolve_process_config("tok")
    assert info.value.hint == "mail-proxy tok token --regenerate"
    assert resolve_process_config("tok", need_token=False).name == "tok"


@pytest.mark.parametrize("token", ["x" * 20 + " two words", "x" * 30 + "é",
                                   "x" * 12 + "\n" + "y" * 12])
def test_an_admin_token_no_client_could_send_is_refused(token: str) -> None:
    create_instance("hdr", "127.0.0.1", 18087, None)
    (paths.instance_dir("hdr") / "api_token").write_text(token + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no client could send it"):
        resolve_process_config("hdr")


def test_the_token_command_refuses_a_short_environment_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mail_proxy.instance.control import read_token

    create_instance("envtok", "127.0.0.1", 18088, None)
    monkeypatch.setenv("GMP_API_TOKEN", "short")
    with pytest.raises(ConfigurationError, match="has 5 characters"):
        read_token("envtok")
    monkeypatch.setenv("GMP_API_TOKEN", "t" * 24)
    assert read_token("envtok") == "t" * 24


def test_concurrent_changes_of_different_keys_all_land(tmp_path) -> None:
    """Three `config set` of process keys at once: each reads config.toml, changes its key
    and writes; without the lock one change could overwrite another's (1 round in 30)."""
    import threading

    from mail_proxy.instance.config import read_toml, update_config, write_toml

    write_toml(tmp_path, {"name": "x", "port": 8000})
    for round_ in range(15):
        changes = {"shutdown_timeout": 30 + round_, "db_pool_size": 5 + round_,
                   "log_level": ("info", "debug")[round_ % 2]}
        start = threading.Barrier(len(changes))

        def change(key: str, value: object, start: threading.Barrier) -> None:
            start.wait()
            update_config(tmp_path, **{key: value})

        threads = [threading.Thread(target=change, args=(*item, start))
                   for item in changes.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = read_toml(tmp_path)
        assert {k: stored[k] for k in changes} == changes
