"""``mail-proxy NAME tenants …`` (cli.md §5)."""

from mail_proxy.cli.placeholders import placeholder_group

app = placeholder_group("Tenants of the instance.", {
    "list": "Table of tenants.",
    "show": "The tenant representation.",
    "add": "Create a tenant (prompts on a terminal).",
    "update": "Partial update of a tenant.",
    "delete": "Delete a tenant.",
})
app.add_typer(placeholder_group("Tenant API keys.", {
    "create": "Create or replace the tenant's API key and print it once.",
    "revoke": "Revoke the tenant's API key.",
}), name="api-key")
