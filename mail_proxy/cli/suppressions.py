"""``mail-proxy NAME TENANT suppressions …`` (enterprise.md §2)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("Suppression list of the tenant.", {
    "list": "Suppressed addresses.",
    "add": "Suppress an address.",
    "remove": "Remove an address from the list.",
})
