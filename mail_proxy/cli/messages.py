"""``mail-proxy NAME TENANT messages …`` (cli.md §6)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("Messages of the tenant.", {
    "list": "Messages, newest first.",
    "show": "One message record.",
    "delete": "Delete messages.",
    "retry": "Retry messages.",
})
