"""GET /openapi.json: generated from the route table, matching api.md §2.4 and docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.api.openapi import build, render_markdown, template
from mail_proxy.api.routes import ROUTES
from tests.api.conftest import LiveServer

# api.md §2.4, one (method, path) per operation; kept here so the test runs without the spec.
SPEC_TABLE = {
    ("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/download/{token}"),
    ("GET", "/metrics"), ("GET", "/status"), ("POST", "/commands/add-messages"),
    ("POST", "/commands/delete-messages"), ("POST", "/commands/retry-messages"),
    ("POST", "/commands/cleanup-messages"), ("POST", "/commands/run-now"),
    ("POST", "/commands/suspend"), ("POST", "/commands/activate"), ("GET", "/messages"),
    ("GET", "/messages/{id}"), ("GET", "/accounts"), ("GET", "/account/{id}"),
    ("POST", "/account"), ("PATCH", "/account/{id}"), ("DELETE", "/account/{id}"),
    ("POST", "/tenant"), ("GET", "/tenants"), ("DELETE", "/tenant/{id}"),
    ("GET", "/tenant/{id}"), ("PATCH", "/tenant/{id}"), ("POST", "/tenant/{id}/api-key"),
    ("DELETE", "/tenant/{id}/api-key"), ("GET", "/instance"), ("PATCH", "/instance"),
    ("GET", "/command-log"), ("GET", "/command-log/export"), ("GET", "/suppressions"),
    ("POST", "/suppressions"), ("DELETE", "/suppressions/{address}"),
}
SPEC_FILE = Path("/work/shared/spec/api.md")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item}


def spec_routes(text: str) -> set[tuple[str, str]]:
    """Every `METHOD /path` of the §2.4 table, with the abbreviated `/retry-messages` forms."""
    section = text.split("### 2.4", 1)[1].split("\n## ", 1)[0]
    found: set[tuple[str, str]] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        method = ""
        for m in re.finditer(r"`(?:(GET|POST|PATCH|DELETE) )?(/[^`]*)`", row.split("|")[1]):
            method = m.group(1) or method
            path = m.group(2)
            if path.count("/") == 1 and found and not path.startswith("/commands") and \
                    "commands" in row:
                path = "/commands" + path
            found.add((method, path))
    return found


async def test_served_document_lists_every_route(live: LiveServer, client: Any) -> None:
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["openapi"].startswith("3.1")
    table = {(m, template(p)) for p, methods, _ in ROUTES for m in methods}
    assert operations(doc) == table == SPEC_TABLE
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiToken"] == {"type": "apiKey", "in": "header", "name": "X-API-Token",
                                   "description": "admin token or tenant API key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    public = {(m.upper(), p) for p, item in doc["paths"].items() for m, op in item.items()
              if op["security"] == []}
    assert public == {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/download/{token}")}


@pytest.mark.skipif(not SPEC_FILE.exists(), reason="specification not available")
def test_spec_table_matches() -> None:
    assert spec_routes(SPEC_FILE.read_text(encoding="utf-8")) == SPEC_TABLE


def test_every_error_status_uses_the_error_object() -> None:
    doc = build()
    for item in doc["paths"].values():
        for op in item.values():
            assert any(code.startswith("2") for code in op["responses"])
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


def test_route_without_description_fails() -> None:
    with pytest.raises(KeyError):
        build([("/nowhere", ["GET"], None)])


def test_docs_api_md_is_generated() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_markdown(build()), \
        "regenerate: python -m mail_proxy.api.openapi --markdown > docs/api.md"
