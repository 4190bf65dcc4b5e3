"""``mail-proxy NAME command-log …`` (cli.md §5)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("The audit log of commands.", {
    "list": "Rows of command_log.",
    "export": "The command-log export document.",
    "purge": "Delete older rows.",
})
