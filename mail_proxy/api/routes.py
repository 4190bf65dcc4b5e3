"""The whole route table: (path, methods, handler). The OpenAPI document is built from it
(``api/openapi.py`` describes each entry; a test keeps both and api.md §2.4 in step)."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from mail_proxy.api import (
    accounts,
    command_log,
    commands,
    instance,
    messages,
    openapi,
    service,
    suppressions,
    tenants,
)
from mail_proxy.api.errors import ApiError


class _RestConvertor(Convertor[str]):
    """Starlette's ``path`` (``.*``) without the newline gap: a percent-encoded line break
    in a message id or address fell through to "no such route" instead of the route's own
    not-found answer (security hunt)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rest", _RestConvertor())


async def download(request: Request) -> Response:
    """Large-file downloads (enterprise.md §5.3) are not served yet: every link is unknown."""
    raise ApiError(404, "link_not_found", "this download link does not exist")


ROUTES = [
    ("/health", ["GET"], service.health),
    ("/status", ["GET"], service.status),
    ("/metrics", ["GET"], service.metrics),
    ("/openapi.json", ["GET"], openapi.openapi_json),
    ("/download/{token}", ["GET"], download),
    ("/commands/add-messages", ["POST"], commands.add_messages),
    ("/commands/delete-messages", ["POST"], commands.delete_messages),
    ("/commands/retry-messages", ["POST"], commands.retry_messages),
    ("/commands/cleanup-messages", ["POST"], commands.cleanup_messages),
    ("/commands/run-now", ["POST"], commands.run_now),
    ("/commands/suspend", ["POST"], commands.suspend),
    ("/commands/activate", ["POST"], commands.activate),
    ("/messages", ["GET"], messages.list_messages),
    ("/messages/{id:rest}", ["GET"], messages.get_message),
    ("/accounts", ["GET"], accounts.list_accounts),
    ("/account", ["POST"], accounts.put_account),
    ("/account/{id}", ["GET"], accounts.get_account),
    ("/account/{id}", ["PATCH"], accounts.patch_account),
    ("/account/{id}", ["DELETE"], accounts.delete_account),
    ("/tenants", ["GET"], tenants.list_tenants),
    ("/tenant", ["POST"], tenants.create_tenant),
    ("/tenant/{id}", ["GET"], tenants.get_tenant),
    ("/tenant/{id}", ["PATCH"], tenants.patch_tenant),
    ("/tenant/{id}", ["DELETE"], tenants.delete_tenant),
    ("/tenant/{id}/api-key", ["POST"], tenants.create_api_key),
    ("/tenant/{id}/api-key", ["DELETE"], tenants.revoke_api_key),
    ("/instance", ["GET"], instance.get_instance),
    ("/instance", ["PATCH"], instance.patch_instance),
    ("/command-log", ["GET"], command_log.list_commands),
    ("/command-log/export", ["GET"], command_log.export_commands),
    ("/suppressions", ["GET"], suppressions.list_suppressions),
    ("/suppressions", ["POST"], suppressions.add_suppression),
    ("/suppressions/{address:rest}", ["DELETE"], suppressions.remove_suppression),
]
