"""``use`` and ``current``: the stored default instance and tenant (cli.md §1.1, §4)."""

from __future__ import annotations

from typing import Annotated

import typer

from mail_proxy.cli.application import EXIT_INSTANCE, EXIT_USAGE, abort, disk_world, out


def use(context: Annotated[str | None, typer.Argument(
            help="inst, inst/tenant, or /tenant (keeps the instance).", show_default=False)
        ] = None,
        clear: Annotated[bool, typer.Option("--clear", help="Forget the context.")] = False,
        ) -> None:
    """Store the default instance and tenant (.current)."""
    from mail_proxy.instance import paths
    from mail_proxy.instance.lookup import checked_tenant_ids

    if clear:
        paths.write_current(None, None)
        out("context cleared")
        return
    if not context:
        abort("give a context (inst, inst/tenant or /tenant) or --clear", EXIT_USAGE)
    instance, _, tenant = context.partition("/")
    if not instance:
        instance = paths.read_current()[0] or ""
        if not instance:
            abort("no instance in the context to keep", EXIT_INSTANCE,
                  "mail-proxy use INSTANCE/TENANT")
    if instance not in paths.instance_names():
        abort(f"instance '{instance}' not found", EXIT_INSTANCE)
    # checked: an unreadable database is its own error, not "tenant not found"
    if tenant and tenant not in checked_tenant_ids(instance):
        abort(f"tenant '{tenant}' not found in instance '{instance}'")
    paths.write_current(instance, tenant or None)
    out(f"context: {instance}" + (f"/{tenant}" if tenant else ""))


def current(export: Annotated[bool, typer.Option(
                "--export", help="Print export lines for the shell.")] = False) -> None:
    """Show the context and where each part comes from."""
    from mail_proxy.cli.grammar import context_instance, context_tenant

    world = disk_world()
    instance, isource = context_instance(world)
    tenant, tsource = context_tenant(world, instance) if instance else (None, None)
    if export:
        if instance:
            out(f"export GMP_INSTANCE={instance}")
        if tenant:
            out(f"export GMP_TENANT={tenant}")
        return
    if instance is None:
        out("no context set")
        return
    if isource == "GMP_INSTANCE" and instance not in world.instances:
        abort(f"instance '{instance}' (from GMP_INSTANCE) not found", EXIT_INSTANCE,
              "mail-proxy list shows the instances")
    labels = {"only": "the only instance", "environment": "GMP_DB_URL/GMP_DB_PATH"}
    text = instance + (f"/{tenant}" if tenant else "")
    where = f"instance: {labels.get(isource or '', isource)}"
    if tenant:
        where += f", tenant: {tsource}"
    out(f"{text}  ({where})")


def register(app: typer.Typer) -> None:
    app.command("use")(use)
    app.command("current")(current)
