"""Attachments: enqueue-time validation, the four fetch modes and the verified cache.

Spec: delivery.md §9, messages.md §1.2 and §2 check 17, settings.md §2.6.
"""

from mail_proxy.delivery.attachments.fetcher import (
    AttachmentFetcher,
    FetchedAttachment,
    TenantFetchContext,
)
from mail_proxy.delivery.attachments.validate import normalise_attachments

__all__ = [
    "AttachmentFetcher",
    "FetchedAttachment",
    "TenantFetchContext",
    "normalise_attachments",
]
