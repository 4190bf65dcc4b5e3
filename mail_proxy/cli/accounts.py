"""``mail-proxy NAME TENANT accounts …`` (cli.md §6)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("SMTP accounts of the tenant.", {
    "list": "Table of accounts.",
    "show": "The account representation.",
    "add": "Create an account (prompts on a terminal).",
    "update": "Partial update of an account.",
    "delete": "Delete an account.",
    "test": "Connect as the dispatcher would and report each step.",
})
