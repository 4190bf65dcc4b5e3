"""Issue 2's user story, exactly as a user types it, with the installed `mail-proxy`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.threaded_smtp import ThreadedSmtpServer
from tests.support.worker import free_port

pytestmark = pytest.mark.slow


def cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["mail-proxy", *args], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"mail-proxy {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def sent_ids() -> list[str]:
    out = cli("demo", "acme", "messages", "list", "--status", "sent", "--limit", "1000",
              "--json").stdout
    return [m["id"] for m in json.loads(out)["messages"]]


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.3)


def batch(start: int, count: int) -> dict[str, object]:
    return {"messages": [
        {"id": f"story-{i}", "from": "Demo <demo@acme.test>", "to": [f"user{i}@example.com"],
         "subject": f"Story {i}", "body": "Hello from the user story."}
        for i in range(start, start + count)]}


def test_user_story_from_start_to_stop() -> None:
    port = free_port()
    home = Path(os.environ["MAIL_PROXY_HOME"])
    with ThreadedSmtpServer() as smtp:
        try:
            started = cli("start", "demo", "--port", str(port))
            lines = started.stdout.splitlines()
            assert lines[0] == f"Created instance 'demo' in {home / 'demo'}"
            token = (home / "demo" / "api_token").read_text().strip()
            assert lines[1].endswith(token)
            assert lines[2].startswith(f"mail-proxy 'demo' is running at http://127.0.0.1:{port}")
            assert oct((home / "demo").stat().st_mode & 0o777) == "0o700"

            cli("demo", "tenants", "add", "acme", "--name", "ACME", "--no-api-key")
            cli("demo", "acme", "accounts", "add", "main", "--host", "127.0.0.1",
                "--port", str(smtp.port), "--tls-mode", "none", "--no-test")

            url = f"http://127.0.0.1:{port}"
            headers = {"X-API-Token": token}
            body = batch(0, 200)
            body["tenant_id"] = "acme"
            r = httpx.post(f"{url}/commands/add-messages", json=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json() == {"ok": True, "queued": 200, "rejected": []}
            wait_until(lambda: len(sent_ids()) == 200)

            listing = json.loads(cli("list", "--json").stdout)
            assert any(i["name"] == "demo" and i["state"] == "RUNNING" for i in
                       (listing if isinstance(listing, list) else listing["instances"]))
            assert "stopped" in cli("stop", "demo").stdout

            # the data survives a stop/start, and the restarted worker keeps delivering
            restarted = cli("start", "demo")
            assert "Admin token" not in restarted.stdout
            assert len(sent_ids()) == 200
            more = batch(200, 10)
            more["tenant_id"] = "acme"
            r = httpx.post(f"{url}/commands/add-messages", json=more, headers=headers)
            assert r.status_code == 200, r.text
            wait_until(lambda: len(sent_ids()) == 210)
        finally:
            cli("stop", "demo", check=False)
        ids = smtp.ids
        assert sorted(ids) == sorted(f"story-{i}" for i in range(210))
        assert set(ids.values()) == {1}, "every message arrives exactly once"
