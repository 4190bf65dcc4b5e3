"""``mail-proxy NAME config …``: runtime and process settings (cli.md §5, settings.md)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("Runtime and process settings.", {
    "show": "Every setting with its value, default and source.",
    "set": "Validate and store one setting.",
    "reset": "Restore a setting's default.",
})
