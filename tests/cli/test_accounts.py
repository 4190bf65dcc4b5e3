"""``accounts`` commands and ``accounts test`` against real SMTP servers (STARTTLS + AUTH)."""

from __future__ import annotations

import json
from typing import Any

PASSWORD = "s3cret-smtp-pass"


def _add(cli: Any, server: Any, ca_file: str, *extra: str) -> Any:
    return cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port",
               str(server.port), "--tls-mode", "starttls", "--tls-ca-file", ca_file,
               "--user", "mailer", "--password", "-", *extra, stdin=PASSWORD + "\n")


def test_add_list_show_update_delete(cli: Any, tenant: str, starttls_server: Any,
                                     ca_file: str) -> None:
    r = _add(cli, starttls_server, ca_file, "--no-test", "--limit-per-hour", "100")
    assert (r.code, r.out) == (0, "created account 'main'\n"), r.err
    r = cli("main", "acme", "accounts", "list")
    assert [line.rstrip() for line in r.out.splitlines()] == [
        "ID    HOST       PORT   TLS       USER    LIMITS (m/h/d)  DEFAULT  THROTTLE",
        f"main  127.0.0.1  {starttls_server.port}  starttls  mailer  -/100/-         yes"
        "      -"]
    r = cli("main", "acme", "accounts", "show", "main", "--json")
    account = json.loads(r.out)["account"]
    assert account["has_password"] is True and account["is_default"] is True
    assert "password" not in account
    r = cli("main", "acme", "accounts", "update", "main", "--max-connections", "5",
            "--no-default", "--json")
    account = json.loads(r.out)["account"]
    assert (account["max_connections"], account["is_default"]) == (5, False)
    r = cli("main", "acme", "accounts", "add", "main", "--host", "x.test", "--no-test")
    assert (r.code, r.err.splitlines()[0]) == (1, "error: account 'main' already exists")
    r = cli("main", "acme", "accounts", "update", "main", "--port", "0")
    assert r.code == 2  # typer range check: a usage error
    r = cli("main", "acme", "accounts", "delete", "main", "--yes")
    assert (r.code, r.out) == (0, "deleted account 'main'\n")
    r = cli("main", "acme", "accounts", "show", "main")
    assert (r.code, r.err) == (1, "error: account 'main' does not exist for tenant 'acme'\n")


def test_connection_test_succeeds_with_starttls_and_auth(cli: Any, tenant: str,
                                                         starttls_server: Any,
                                                         ca_file: str) -> None:
    r = _add(cli, starttls_server, ca_file, "--test", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["created"] is True and doc["test"]["ok"] is True
    names = [s["step"] for s in doc["test"]["steps"]]
    assert names == ["DNS resolution", "TCP connect", "greeting", "EHLO", "STARTTLS",
                     "EHLO after STARTTLS", "AUTH", "NOOP", "QUIT"]
    starttls = doc["test"]["steps"][4]["detail"]
    assert starttls.startswith("TLSv1.") and "issuer" in starttls and "expires" in starttls
    r = cli("main", "acme", "accounts", "test", "main", "--to", "rcpt@example.com",
            "--from", "sender@acme.test")
    assert r.code == 0, r.err
    assert [line.split()[0] for line in r.out.splitlines()] == ["ok"] * 12
    assert "as mailer" in r.out.splitlines()[6]
    assert len(starttls_server.messages) == 1
    received = starttls_server.messages[0]
    assert (received.mail_from, received.rcpt_tos) == ("sender@acme.test",
                                                       ["rcpt@example.com"])
    assert received.tls and received.login == "mailer"
    assert PASSWORD not in r.text


def test_connection_test_reports_a_failing_auth(cli: Any, tenant: str, starttls_server: Any,
                                                ca_file: str) -> None:
    r = _add(cli, starttls_server, ca_file, "--no-test")
    assert r.code == 0
    starttls_server.script(auth_fail=True)
    r = cli("main", "acme", "accounts", "test", "main")
    assert r.code == 1
    last = r.out.splitlines()[-1]
    assert last.startswith("FAIL AUTH") and "auth_failed: 535" in last
    assert r.err.startswith("error: connection test failed at AUTH: auth_failed: 535")
    assert PASSWORD not in r.text


def test_connection_refused_and_missing_sender(cli: Any, tenant: str) -> None:
    from tests.cli.conftest import free_port

    port = free_port()
    r = cli("main", "acme", "accounts", "add", "dead", "--host", "127.0.0.1", "--port",
            str(port), "--tls-mode", "none", "--no-test")
    assert r.code == 0
    r = cli("main", "acme", "accounts", "test", "dead", "--timeout", "3")
    assert r.code == 1
    assert r.err == (f"error: connection test failed at TCP connect: connection_failed: "
                     f"connection refused by 127.0.0.1:{port}\n")
    r = cli("main", "acme", "accounts", "test", "dead", "--to", "x@example.com")
    assert r.code == 2 and "needs a sender" in r.err


def test_connection_test_prints_each_step_as_it_ends(cli: Any, tenant: str) -> None:
    """A server that greets and then never answers EHLO: the steps that passed are on the
    screen while the test still waits, not only when it gives up."""
    import socket
    import subprocess
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        conn.sendall(b"220 mute.test ESMTP\r\n")  # then silence

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = cli("main", "acme", "accounts", "add", "mute", "--host", "127.0.0.1", "--port",
                str(port), "--tls-mode", "none", "--no-test")
        assert r.code == 0, r.err
        proc = subprocess.Popen(["mail-proxy", "main", "acme", "accounts", "test", "mute",
                                 "--timeout", "4"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        seen = []
        while not seen or seen[-1].split()[1:2] != ["greeting"]:
            line = proc.stdout.readline()
            assert line, "the command ended before printing the greeting step"
            seen.append(line)
        assert proc.poll() is None  # still waiting for the EHLO reply
        started = time.monotonic()
        rest, err = proc.communicate(timeout=20)
        assert time.monotonic() - started > 1
        assert proc.returncode == 1
        assert rest.splitlines()[-1].startswith("FAIL EHLO")
        assert "connection test failed at EHLO" in err
    finally:
        listener.close()
        for conn in held:
            conn.close()
