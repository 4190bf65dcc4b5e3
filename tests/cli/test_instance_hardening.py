"""Instance management under hostile conditions: odd paths, broken folders, hand-edited files.

Each case drives the real command (in-process through ``run``, or as a subprocess where the
environment or the umask must differ) with MAIL_PROXY_HOME in a temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.instance import paths
from mail_proxy.instance.config import create_instance, read_toml
from mail_proxy.instance.states import is_alive, read_record
from tests.cli.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
as_root = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    """A `start` these tests expect to be refused must not leave a supervisor running when
    it is not (as on the code before the fixes, where `--host ''` bound every address)."""
    yield
    with contextlib.suppress(OSError):
        for record_file in paths.home().glob("*/supervisor.json"):
            record = read_record(record_file.parent) or {}
            for kind in ("supervisor", "worker"):
                if is_alive(record.get(f"{kind}_pid"), record.get(f"{kind}_create_time")):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(record[f"{kind}_pid"], signal.SIGKILL)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_sub(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process, its own umask."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "mail_proxy", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=60, stdin=subprocess.DEVNULL,
                          umask=umask)


def no_surprise(text: str) -> None:
    assert "unexpected" not in text and "Traceback" not in text, text


# -- finding 1: SQLite URIs built from paths with # ? % -----------------------------------

@pytest.mark.parametrize("folder", ["home#hash", "home?q", "home%25pct"])
def test_tenant_level_commands_find_tenants_under_uri_characters(
        cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    monkeypatch.setenv("MAIL_PROXY_HOME", str(tmp_path / folder))
    create_instance("h1", "127.0.0.1", free_port(), None)
    assert cli("h1", "tenants", "add", "--no-api-key", "--name", "T", "tt").code == 0
    r = cli("h1", "tt", "info")
    assert r.code == 0, r.text
    assert "tt" in r.out
    completed = cli("__complete", "h1", "")
    assert "tt" in completed.out.splitlines()


# -- finding 2: a trailing newline in an instance name ------------------------------------

def test_instance_name_with_trailing_newline_is_refused(cli: Any) -> None:
    assert paths.name_problem("nl\n") is not None
    r = cli("start", "--port", str(free_port()), "--", "nl\n")
    assert r.code == 2 and "invalid instance name" in r.err, r.text
    assert not paths.home().exists() or os.listdir(paths.home()) == []


def test_an_instance_name_too_long_for_the_file_system_is_a_usage_error(cli: Any) -> None:
    """Checked before the folder is looked at: 256 characters made the lookup itself fail
    ("unexpected OSError", exit 1) once the home folder existed."""
    paths.ensure_home()
    r = cli("start", "--port", str(free_port()), "--wait", "1", "a" * 256)
    assert r.code == 2 and "invalid instance name" in r.err, r.text
    no_surprise(r.text)


# -- finding 4: tenant lookup errors are the real errors -----------------------------------

@pytest.fixture
def with_tenant(cli: Any) -> Path:
    create_instance("i1", "127.0.0.1", free_port(), None)
    assert cli("i1", "tenants", "add", "--no-api-key", "--name", "T", "t1").code == 0
    return paths.instance_dir("i1")


def test_grammar_reports_an_unreadable_database_not_a_missing_tenant(
        cli: Any, with_tenant: Path) -> None:
    db = with_tenant / "mail_service.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    instance_level = cli("i1", "tenants", "list")
    tenant_level = cli("i1", "t1", "info")
    assert instance_level.code == 1 and "cannot open SQLite database" in instance_level.err
    assert tenant_level.code == instance_level.code, tenant_level.text
    assert "cannot open SQLite database" in tenant_level.err
    assert "not found" not in tenant_level.err
    # completion stays silent: nothing offered, nothing printed, exit 0
    completed = cli("__complete", "i1", "t1", "")
    assert completed.code == 0 and completed.out == "" and completed.err == ""


def test_grammar_reports_a_shared_instance_folder_like_instance_commands(
        cli: Any, with_tenant: Path) -> None:
    with_tenant.chmod(0o755)
    instance_level = cli("i1", "tenants", "list")
    tenant_level = cli("i1", "t1", "accounts", "list")
    assert instance_level.code == 2
    assert (tenant_level.code, tenant_level.err) == (instance_level.code, instance_level.err)
    assert "chmod 700" in tenant_level.err
    with_tenant.chmod(0o700)


def test_use_reports_an_unreadable_database(cli: Any, with_tenant: Path) -> None:
    (with_tenant / "mail_service.db").write_bytes(b"garbage" * 500)
    r = cli("use", "i1/t1")
    assert r.code == 1 and "cannot open SQLite database" in r.err, r.text


# -- finding 5: filesystem problems are one readable line ----------------------------------

def test_home_that_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "afile"
    home.write_text("x")
    env = {"MAIL_PROXY_HOME": str(home)}
    r = run_sub("start", "x1", "--port", str(free_port()), env=env)
    no_surprise(r.stderr)
    assert r.returncode == 2 and str(home) in r.stderr, r.stderr
    listed = run_sub("list", env=env)
    no_surprise(listed.stderr)
    assert listed.returncode == 2 and str(home) in listed.stderr, listed.stderr
    assert run_sub("--help", env=env).returncode == 0
    cleared = run_sub("use", "--clear", env=env)
    assert cleared.returncode == 0, cleared.stderr


def test_instance_path_taken_by_a_file_or_a_broken_link(cli: Any, tmp_path: Path) -> None:
    paths.ensure_home()
    (paths.home() / "x").write_text("not a folder")
    os.symlink(tmp_path / "nowhere", paths.home() / "y")
    for name in ("x", "y"):
        r = cli("start", name, "--port", str(free_port()))
        no_surprise(r.text)
        assert r.code == 2 and str(paths.home() / name) in r.err, r.text


def test_a_write_that_fails_names_the_file(cli: Any) -> None:
    create_instance("i1", "127.0.0.1", free_port(), None)
    token = paths.instance_dir("i1") / "api_token"
    token.unlink()
    token.mkdir()
    r = cli("i1", "token", "--regenerate")
    no_surprise(r.text)
    assert r.code == 2 and f"cannot write {token}" in r.err, r.text


@pytest.mark.skipif(as_root, reason="root writes into a 0500 folder anyway")
def test_home_without_write_permission(cli: Any) -> None:
    paths.ensure_home()
    paths.home().chmod(0o500)
    try:
        r = cli("start", "x1", "--port", str(free_port()))
    finally:
        paths.home().chmod(0o700)
    no_surprise(r.text)
    assert r.code == 2 and "Permission denied" in r.err, r.text


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_completion_install_without_a_home_folder(tmp_path: Path, shell: str) -> None:
    missing = tmp_path / "gone" / "x"
    r = run_sub("completion", "install", shell, env={"HOME": str(missing)})
    no_surprise(r.stderr)
    assert r.returncode == 2 and str(missing) in r.stderr, r.stderr
    assert not (tmp_path / "gone").exists()


# -- finding 6: a malformed --db URL -------------------------------------------------------

@pytest.mark.parametrize("url", ["postgresql://bob:S3cretPW@127.0.0.1:bad/db",
                                 "postgresql://bob:S3cretPW@PW@[::1/db"])
def test_malformed_database_url_is_a_usage_error(cli: Any, url: str) -> None:
    r = cli("start", "pg2", "--port", str(free_port()), "--db", url)
    assert r.code == 2 and "invalid database URL" in r.err, r.text
    assert "S3cretPW" not in r.text
    assert not paths.instance_dir("pg2").exists()


# -- finding 7: hand-edited config.toml values --------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("shutdown_timeout", float("nan")), ("shutdown_timeout", -5),
    ("shutdown_timeout", float("inf")), ("shutdown_timeout", 0),
    ("shutdown_timeout", "30"), ("shutdown_timeout", True),
    ("db_pool_size", -1), ("db_pool_size", 2.7), ("db_pool_size", 5000),
    ("host", ["a"]), ("host", "bad host")
])
def test_config_toml_values_are_checked_on_load(cli: Any, key: str, value: Any) -> None:
    with_bad_value("t2", key, value)
    r = cli("t2", "tenants", "list")
    assert r.code == 2 and key in r.err and "config.toml" in r.err, r.text


@pytest.mark.parametrize(("key", "value", "fixed"), [
    ("port", "abc", "8123"), ("db_pool_size", -1, "5"), ("host", "bad host", "localhost"),
])
def test_config_set_repairs_a_bad_config_toml_value(cli: Any, key: str, value: Any,
                                                     fixed: str) -> None:
    folder = with_bad_value("t4", key, value)
    assert cli("t4", "tenants", "list").code == 2
    r = cli("t4", "config", "set", key, fixed)
    assert r.code == 0, r.text
    assert str(read_toml(folder)[key]) == fixed
    assert cli("t4", "tenants", "list").code == 0


def with_bad_value(name: str, key: str, value: Any) -> Path:
    """A new instance whose config.toml was hand-edited to hold ``key = value``."""
    create_instance(name, "127.0.0.1", free_port(), None)
    folder = paths.instance_dir(name)
    values = read_toml(folder)
    values[key] = value
    (folder / "config.toml").write_text(
        "\n".join(f"{k} = {_toml(v)}" for k, v in values.items()) + "\n")
    return folder


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if value == float("inf"):
        return "inf"
    return json.dumps(value)


@pytest.mark.parametrize(("key", "value"), [("host", ["a"]), ("port", "abc")])
def test_list_shows_the_problem_instead_of_a_bogus_url(cli: Any, key: str, value: Any) -> None:
    with_bad_value("t3", key, value)
    r = cli("list", "--json")
    row = json.loads(r.out)["instances"][0]
    assert row["state"] == "UNKNOWN" and row["url"] is None, row
    assert key in row["error"]


# -- finding 9: --host is checked before anything is created -------------------------------

@pytest.mark.parametrize("host", ["bad host", "nosuch.invalid", "", "a/b"])
def test_bad_host_is_refused_before_creation(cli: Any, host: str) -> None:
    r = cli("start", "hh", "--host", host, "--port", str(free_port()))
    assert r.code == 2 and "host" in r.err and "in use" not in r.err, r.text
    assert not paths.instance_dir("hh").exists()


def test_bad_host_is_not_saved_into_an_existing_instance(cli: Any) -> None:
    create_instance("hh", "127.0.0.1", free_port(), None)
    r = cli("start", "hh", "--host", "bad host")
    assert r.code == 2 and "invalid host" in r.err, r.text
    assert read_toml(paths.instance_dir("hh"))["host"] == "127.0.0.1"


def test_config_set_host_applies_the_start_rule(cli: Any) -> None:
    """`config set host` used to accept any non-empty text, which `start` then refused."""
    create_instance("hs", "127.0.0.1", free_port(), None)
    r = cli("hs", "config", "set", "host", "bad host")
    assert r.code == 2 and "host" in r.err, r.text
    assert read_toml(paths.instance_dir("hs"))["host"] == "127.0.0.1"
    assert cli("hs", "config", "set", "host", "::1").code == 0


# -- finding 10: database files are private ------------------------------------------------

def test_database_files_created_by_the_cli_are_0600(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    db = shared / "env.sqlite"
    env = {"GMP_DB_PATH": str(db), "MAIL_PROXY_ENCRYPTION_KEY": _key_text()}
    r = run_sub("tenants", "add", "--no-api-key", "--name", "T", "t1", env=env)
    assert r.returncode == 0, r.stderr
    made = [p for p in shared.iterdir() if p.name.startswith("env.sqlite")]
    assert db in made
    for path in made:
        assert mode(path) == 0o600, (path, oct(mode(path)))


def test_instance_database_is_0600(tmp_path: Path) -> None:
    create_instance("demo", "127.0.0.1", free_port(), None)
    r = run_sub("demo", "tenants", "add", "--no-api-key", "--name", "T", "t1")
    assert r.returncode == 0, r.stderr
    folder = paths.instance_dir("demo")
    made = [p for p in folder.iterdir() if p.name.startswith("mail_service.db")]
    assert made
    for path in made:
        assert mode(path) == 0o600, (path, oct(mode(path)))


def _key_text() -> str:
    import base64

    return base64.b64encode(os.urandom(32)).decode("ascii")


# -- finding 14: a hand-edited supervisor.json, and status without a database -------------

@pytest.mark.parametrize("state", [["x"], {}])
def test_stop_copes_with_a_non_string_state(cli: Any, state: Any) -> None:
    create_instance("i1", "127.0.0.1", free_port(), None)
    (paths.instance_dir("i1") / "supervisor.json").write_text(json.dumps({"state": state}))
    r = cli("stop", "i1")
    assert r.code == 0 and "not running" in r.out, r.text


def test_status_says_why_message_counts_are_unavailable(cli: Any) -> None:
    create_instance("i1", "127.0.0.1", free_port(), None)
    (paths.instance_dir("i1") / "mail_service.db").write_bytes(b"garbage" * 500)
    r = cli("status", "i1")
    assert r.code == 3
    line = next(x for x in r.out.splitlines() if x.startswith("messages:"))
    assert "unavailable" in line and "file is not a database" in line, line
    doc = json.loads(cli("status", "i1", "--json").out)
    assert doc["messages"] is None and "file is not a database" in doc["messages_error"]


def test_status_counts_the_messages_of_the_instance_it_names(
        cli: Any, monkeypatch: Any, tmp_path: Any) -> None:
    """CLI hunt: status took GMP_DB_PATH (and GMP_PORT, GMP_LOG_LEVEL) from the caller's
    shell for its message counts, while every other line ignored them."""
    create_instance("i1", "127.0.0.1", free_port(), None)
    assert cli("i1", "tenants", "add", "acme", "--no-api-key").code == 0
    other = tmp_path / "other.db"
    other.write_bytes(b"garbage" * 500)
    monkeypatch.setenv("GMP_DB_PATH", str(other))
    monkeypatch.setenv("GMP_PORT", "99999")
    monkeypatch.setenv("GMP_LOG_LEVEL", "loud")
    doc = json.loads(cli("status", "i1", "--json").out)
    assert "messages_error" not in doc, doc
    assert doc["messages"] == {}


# -- a database that went missing is never silently replaced ------------------------------

def test_a_missing_database_is_an_error_not_an_empty_new_one(cli: Any) -> None:
    create_instance("gone", "127.0.0.1", free_port(), None)
    db = paths.instance_dir("gone") / "mail_service.db"
    assert db.is_file()  # made with the instance
    assert cli("gone", "tenants", "add", "acme", "--name", "ACME", "--no-api-key").code == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for args in (("gone", "tenants", "list"), ("start", "gone")):
        r = cli(*args)
        assert r.code == 3, r.text
        assert "database of instance 'gone' is missing" in r.err and str(db) in r.err, r.text
        assert "mail-proxy delete gone" in r.err
        assert not db.exists()
    r = run_sub("serve", "gone")
    no_surprise(r.stderr)
    assert r.returncode == 2 and "is missing" in r.stderr, r.stderr
    assert not db.exists()
    elsewhere = db.parent / "moved.db"  # the path came from the environment: named there
    r = run_sub("serve", "gone", env={"GMP_DB_PATH": str(elsewhere)})
    assert "hint: restore it from a backup, or correct GMP_DB_PATH" in r.stderr, r.stderr
    assert cli("delete", "gone", "--force").code == 0


def test_a_truncated_database_is_an_error_not_an_empty_new_one(cli: Any) -> None:
    create_instance("cut", "127.0.0.1", free_port(), None)
    db = paths.instance_dir("cut") / "mail_service.db"
    assert cli("cut", "tenants", "add", "acme", "--name", "ACME", "--no-api-key").code == 0
    db.write_bytes(b"")
    r = cli("cut", "tenants", "list")
    assert r.code == 3 and "database of instance 'cut' is empty (0 bytes)" in r.err, r.text
    assert db.stat().st_size == 0


def test_a_database_path_in_a_missing_folder_is_one_readable_line(
        cli: Any, tmp_path: Path) -> None:
    r = cli("start", "nodir", "--port", str(free_port()),
            "--db", f"sqlite://{tmp_path}/absent/x.db")
    assert r.code == 2 and "cannot create the SQLite database" in r.err, r.text
    assert "unexpected" not in r.err and "Traceback" not in r.err
    assert not paths.instance_dir("nodir").exists()


def test_delete_names_a_database_it_leaves_outside_the_folder(cli: Any, tmp_path: Path) -> None:
    outside = tmp_path / "shared.db"
    create_instance("outer", "127.0.0.1", free_port(), f"sqlite://{outside}")
    r = cli("delete", "outer", "--force")
    assert r.code == 0 and f"SQLite database {outside} lies outside" in r.err, r.text
    assert outside.exists() and not paths.instance_dir("outer").exists()


def test_environment_configured_databases_are_still_created_on_first_use(
        cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "fresh.db"
    monkeypatch.setenv("GMP_DB_URL", f"sqlite://{db}")
    monkeypatch.setenv("MAIL_PROXY_ENCRYPTION_KEY", base64.b64encode(b"k" * 32).decode())
    r = cli("tenants", "list")
    assert r.code == 0, r.text
    assert db.is_file()


# -- CLI hunt of 2026-11-25 ---------------------------------------------------------------

def test_tenant_level_commands_report_a_missing_database(cli: Any, with_tenant: Path) -> None:
    (with_tenant / "mail_service.db").rename(with_tenant / "elsewhere.db")
    for argv in (("i1", "tenants", "list"), ("i1", "t1", "accounts", "list"), ("i1", "t1")):
        r = cli(*argv)
        assert r.code == 3, (argv, r.text)
        assert "the database of instance 'i1' is missing" in r.err and "not found" not in r.err


def test_unreadable_context_and_secret_files_are_one_line(cli: Any, with_tenant: Path) -> None:
    current = paths.home() / ".current"
    current.write_bytes(b"\xff\xfe")
    assert cli("use", "--clear").code == 0  # the way out works
    assert not current.exists()
    current.write_bytes(b"\xff\xfe")
    r = cli("current")
    no_surprise(r.text)
    token = with_tenant / "api_token"
    token.write_bytes(b"\xff\xfe" * 20)
    r = cli("i1", "token")
    assert r.code == 2 and f"cannot read {token}: not UTF-8 text" in r.err, r.text
    token.unlink()
    token.mkdir()
    r = cli("i1", "token")
    assert r.code == 2 and f"cannot read {token}" in r.err, r.text
    no_surprise(r.text)


def test_export_to_a_bad_path_and_huge_log_counts_are_one_line(cli: Any, with_tenant: Path,
                                                                tmp_path: Path) -> None:
    for target in (tmp_path / "missing" / "x.json", tmp_path):
        r = cli("i1", "command-log", "export", "-o", str(target))
        assert r.code == 2 and r.err.startswith(f"error: cannot write {target}: "), r.text
    r = cli("logs", "i1", "-n", "99999999999999999999")
    assert r.code == 0, r.text
    no_surprise(r.text)


def test_a_refused_start_changes_no_configuration(cli: Any, with_tenant: Path) -> None:
    import socket

    before = read_toml(with_tenant)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("start", "i1", "--port", str(port))
    assert r.code == 1 and "is in use" in r.err, r.text
    assert read_toml(with_tenant) == before
    r = cli("start", "i1", "--host", "192.0.2.1")  # an address this host does not have
    assert r.code == 2 and "cannot listen on 192.0.2.1:" in r.err, r.text
    assert read_toml(with_tenant) == before
    r = cli("start", "fresh", "--host", "192.0.2.1", "--port", str(free_port()))
    assert r.code == 2 and not paths.instance_dir("fresh").exists(), r.text


def test_a_home_that_is_not_utf8_creates_nothing(tmp_path: Path) -> None:
    home = os.fsencode(tmp_path) + b"/h\xff"
    env = {**os.environ, "MAIL_PROXY_HOME": os.fsdecode(home)}
    r = subprocess.run([sys.executable, "-m", "mail_proxy", "start", "zz", "--port",
                        str(free_port()), "--wait", "0"], env=env, capture_output=True,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode().startswith("error: MAIL_PROXY_HOME is not UTF-8 text: ")
    assert not os.path.exists(home)


# -- a password given as a query parameter of the database URL (security hunt) ---------

def test_a_query_password_moves_to_db_password_and_is_never_shown(cli: Any) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable&password=QPW1eak"
    create_instance("pgq", "127.0.0.1", free_port(), url)
    folder = paths.instance_dir("pgq")
    assert (folder / "db_password").read_text().strip() == "QPW1eak"
    assert "QPW1eak" not in (folder / "config.toml").read_text()
    assert read_toml(folder)["db_url"] == \
        "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"
    for args in (("list",), ("list", "--json"), ("pgq", "info"), ("pgq", "info", "--json"),
                 ("status", "pgq"), ("pgq", "config", "show")):
        r = cli(*args)
        assert "QPW1eak" not in r.text and "password=" not in r.text, (args, r.text)


@pytest.mark.parametrize("query", ["sslpassword=KeyPass9", "password=a9&password=b9"])
def test_query_secrets_that_cannot_move_are_refused(cli: Any, query: str) -> None:
    r = cli("start", "pgs", "--port", str(free_port()), "--db",
            f"postgresql://postgres:Other9@127.0.0.1:5432/test?{query}")
    assert r.code == 2, r.text
    assert "KeyPass9" not in r.text and "a9" not in r.text and "Other9" not in r.text
    no_surprise(r.text)
    assert not paths.instance_dir("pgs").exists()


def test_a_config_toml_that_is_not_utf8_is_one_configuration_error(cli: Any) -> None:
    """A Latin-1 byte (an editor's encoding) gave "unexpected UnicodeDecodeError" in every
    command, `list` of every instance included (ops hunt, 2026-11-25)."""
    create_instance("t5", "127.0.0.1", free_port(), None)
    create_instance("t6", "127.0.0.1", free_port(), None)
    with (paths.instance_dir("t5") / "config.toml").open("ab") as fh:
        fh.write(b"# h\xe9llo\n")
    r = cli("t5", "tenants", "list")
    assert (r.code, r.err.splitlines()[0]) == (
        2, f"error: {paths.instance_dir('t5') / 'config.toml'} is not valid TOML: byte "
           f"{(paths.instance_dir('t5') / 'config.toml').stat().st_size - 5} is not UTF-8"), r.text
    listed = cli("list")
    assert listed.code == 0 and "t6" in listed.out and "t5" in listed.out, listed.text


def test_ctrl_c_while_a_new_instance_is_checked_keeps_nothing(cli: Any, monkeypatch: Any) -> None:
    """CLI hunt: Ctrl-C between writing config.toml and the end of the preflight left a
    complete instance that was never announced (no token shown); the next start ran it as
    an existing one."""
    from mail_proxy.instance import control, paths

    def interrupted(*_args: Any, **_kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(control, "_preflight", interrupted)
    r = cli("start", "fresh", "--port", str(free_port()))
    assert r.code == 130 and "Created instance" not in r.out
    assert not paths.instance_dir("fresh").exists()


def test_ctrl_c_during_the_stop_of_a_restart_says_what_is_left(
        cli: Any, instance: Any, monkeypatch: Any) -> None:
    from mail_proxy.instance import control

    def interrupted(*_args: Any, **_kw: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(control, "stop", interrupted)
    r = cli("restart", "main")
    assert r.code == 130
    assert "interrupted: instance 'main' may still be stopping" in r.err


def test_an_unreadable_schema_is_not_version_0(tmp_path: Any) -> None:
    """Disk-full hunt: any SQLite error read as schema version 0, and the CLI said the
    database "needs migration 0 -> 1, but its worker (an older mail-proxy) is running"."""
    import sqlite3

    from mail_proxy.cli.database import _sqlite_version

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert _sqlite_version(str(garbage)) is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert _sqlite_version(str(empty)) == 0
    assert _sqlite_version(str(tmp_path / "missing.db")) is None
