"""Property-based run of every operation of /openapi.json against a live worker on loopback:
no 5xx, and every answer conforms to the documented status codes, content types, headers
and schemas. Bounded: a few examples per operation, the whole file well under a minute."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from mail_proxy.api.openapi import build
from tests.api.conftest import LiveServer

# The coverage phase enumerates boundary values of every property: hundreds of cases for
# PATCH /instance alone. The fuzzing phase with a fixed seed keeps the run bounded.
schema = schemathesis.openapi.from_dict(build(), config=SchemathesisConfig.from_dict(
    {"phases": {"coverage": {"enabled": False}}}))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(live: LiveServer) -> Iterator[LiveServer]:
    yield live


def _restore(live: LiveServer, case: Any) -> None:
    """Undo a generated PATCH /instance so later examples run under default settings (a
    random api_requests_per_minute or max_request_bytes would starve the rest of the run)."""
    if case.method.upper() == "PATCH" and case.path == "/instance" and \
            isinstance(case.body, dict) and case.body:
        live.call("PATCH", "/instance", live.admin_token,
                  json=dict.fromkeys(case.body))


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(server: LiveServer, case: Any) -> None:
    response = case.call(base_url=server.url, headers={"X-API-Token": server.admin_token},
                         timeout=10)
    try:
        case.validate_response(response, checks=CHECKS)
    finally:
        _restore(server, case)


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_with_tenant_key(server: LiveServer, case: Any) -> None:
    response = case.call(base_url=server.url, headers={"X-API-Token": server.keys["acme"]},
                         timeout=10)
    case.validate_response(response, checks=CHECKS)
