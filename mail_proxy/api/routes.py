"""The whole route table: (path, methods, handler). The OpenAPI document is built from it."""

from __future__ import annotations

from mail_proxy.api import commands, messages, service

ROUTES = [
    ("/health", ["GET"], service.health),
    ("/status", ["GET"], service.status),
    ("/metrics", ["GET"], service.metrics),
    ("/commands/add-messages", ["POST"], commands.add_messages),
    ("/commands/delete-messages", ["POST"], commands.delete_messages),
    ("/commands/retry-messages", ["POST"], commands.retry_messages),
    ("/commands/cleanup-messages", ["POST"], commands.cleanup_messages),
    ("/commands/run-now", ["POST"], commands.run_now),
    ("/commands/suspend", ["POST"], commands.suspend),
    ("/commands/activate", ["POST"], commands.activate),
    ("/messages", ["GET"], messages.list_messages),
    ("/messages/{id:path}", ["GET"], messages.get_message),
]
