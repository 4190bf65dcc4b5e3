"""Envelope commands written directly on a pooled aiosmtplib connection."""

from __future__ import annotations

import aiosmtplib


# aiosmtplib's mail()/rcpt() re-parse every address with the email package (a noticeable
# share of dispatch CPU). Envelope addresses here are already validated bare ASCII
# addr-specs (IDNA domains), so the commands are written directly, with the same replies.
async def mail(client: aiosmtplib.SMTP, sender: str) -> None:
    response = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def rcpt(client: aiosmtplib.SMTP, recipient: str) -> None:
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)

