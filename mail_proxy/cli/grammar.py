"""Turn ``argv`` into (level, instance, tenant, command words): cli.md §1 as a pure function.

Typer cannot parse ``mail-proxy demo acme accounts add …`` on its own, so the words naming the
instance and the tenant are resolved here first, against a :class:`World` snapshot (existing
instances, environment, ``.current``, tenant lookup). Nothing here touches the disk itself, so
every row of the grammar is unit-testable.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from mail_proxy.instance.paths import GLOBAL_WORDS, INSTANCE_WORDS, TENANT_ONLY_WORDS, TENANT_WORDS

ENV_INSTANCE_DEFAULT = "mail-proxy"


class GrammarError(Exception):
    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.exit_code, self.hint = message, exit_code, hint


@dataclass(frozen=True)
class World:
    instances: Collection[str]
    env: Mapping[str, str] = field(default_factory=dict)
    current: tuple[str | None, str | None] = (None, None)
    tenant_ids: Callable[[str], Collection[str]] = lambda _instance: ()


@dataclass(frozen=True)
class Route:
    level: str  # "global", "instance" or "tenant"
    args: list[str]  # what the typer app of that level parses: command word first
    instance: str | None = None
    tenant: str | None = None
    instance_source: str | None = None  # "argv", "GMP_INSTANCE", "environment", ".current", "only"
    tenant_source: str | None = None  # "argv", "GMP_TENANT", ".current"

    @property
    def used_context(self) -> bool:
        return (self.instance_source not in (None, "argv")
                or self.tenant_source not in (None, "argv"))

    @property
    def notice(self) -> str:
        return f"({self.instance}/{self.tenant})" if self.tenant else f"({self.instance})"


def context_instance(world: World) -> tuple[str | None, str | None]:
    """(instance, source) from the context rules of cli.md §1.1, steps 2-5."""
    env = world.env
    named = env.get("GMP_INSTANCE") or None
    if named and named in world.instances:
        return named, "GMP_INSTANCE"
    if env.get("GMP_DB_URL") or env.get("GMP_DB_PATH"):
        return named or ENV_INSTANCE_DEFAULT, "environment"
    if named:
        # cli.md §1.1 would fall through to .current: a mistyped GMP_INSTANCE then ran the
        # command on another instance. It is named, so its absence is the error.
        return named, "GMP_INSTANCE"
    current = world.current[0]
    if current and current in world.instances:
        return current, ".current"
    if len(world.instances) == 1:
        return next(iter(world.instances)), "only"
    return None, None


def context_tenant(world: World, instance: str) -> tuple[str | None, str | None]:
    if world.env.get("GMP_TENANT"):
        return world.env["GMP_TENANT"], "GMP_TENANT"
    current_instance, current_tenant = world.current
    # a tenant stored by `use` belongs to the instance stored with it
    if current_tenant and (current_instance in (None, instance)):
        return current_tenant, ".current"
    return None, None


HELP_FLAGS = ("-h", "--help")


def resolve_argv(argv: list[str], world: World) -> Route:
    try:
        return _resolve(argv, world)
    except GrammarError:
        route = _help_route(argv, world)
        if route is None:
            raise
        return route


def _help_route(argv: list[str], world: World) -> Route | None:
    """``mail-proxy send --help`` before any instance or tenant exists: the help of the
    command, with NAME and TENANT standing for the missing names (CLI hunt: a new user got
    "no instance given" instead of the options). Help is printed before any command runs,
    so the placeholders never reach the disk."""
    if not any(a in HELP_FLAGS for a in argv):
        return None
    words = [a for a in argv if not a.startswith("-")]
    command = next((w for w in words if w in INSTANCE_WORDS or w in TENANT_WORDS), None)
    if command is None:
        return None
    rest = argv[argv.index(command):]
    instance = argv[0] if argv[0] in world.instances else "NAME"
    if command in TENANT_ONLY_WORDS:
        return Route("tenant", rest, instance, "TENANT", "argv", "argv")
    return Route("instance", rest, instance, None, "argv")


def _resolve(argv: list[str], world: World) -> Route:
    if not argv or argv[0].startswith("-") or argv[0] in GLOBAL_WORDS:
        return Route("global", list(argv))
    first = argv[0]
    instance: str | None
    source: str | None
    if first in world.instances:
        instance, source, rest = first, "argv", argv[1:]
    else:
        is_word = first in INSTANCE_WORDS or first in TENANT_WORDS
        instance, source = context_instance(world)
        if source == "GMP_INSTANCE" and instance not in world.instances:
            raise GrammarError(f"instance '{instance}' (from GMP_INSTANCE) not found", 3,
                               "mail-proxy list shows the instances")
        if instance is None:
            if is_word:
                raise GrammarError("no instance given and no context set", 3,
                                   "name the instance, or run `mail-proxy use NAME`")
            raise _instance_not_found(first, world)
        if not is_word and first not in world.tenant_ids(instance):
            raise _instance_not_found(first, world)
        rest = list(argv)
    return _after_instance(rest, world, instance, source)


def _after_instance(rest: list[str], world: World, instance: str,
                    source: str | None) -> Route:
    if not rest:
        return Route("instance", ["info"], instance, None, source)
    word = rest[0]
    if word in INSTANCE_WORDS or word.startswith("-"):
        return Route("instance", rest, instance, None, source)
    if word in TENANT_ONLY_WORDS:
        tenant, tsource = context_tenant(world, instance)
        if tenant is None:
            raise GrammarError("no tenant given and no tenant context set", 2,
                               f"name the tenant, or run `mail-proxy use {instance}/TENANT`")
        # checked as step 4 checks a tenant on the command line: a stale .current or a
        # mistyped GMP_TENANT otherwise reads as an empty queue ("no messages", exit 0)
        if tenant not in world.tenant_ids(instance):
            raise _tenant_not_found(tenant, instance)
        return Route("tenant", rest, instance, tenant, source, tsource)
    if word in world.tenant_ids(instance):
        tail = rest[1:] or ["info"]
        return Route("tenant", tail, instance, word, source, "argv")
    raise _tenant_not_found(word, instance)


def _did_you_mean(word: str, *groups: Collection[str]) -> str:
    """``"did you mean 'status'? "`` for a near miss (a mistyped command reads as a name);
    the groups are tried in order, the words most likely at that position first."""
    for group in groups:
        close = difflib.get_close_matches(word, sorted(group), n=1, cutoff=0.75)
        if close:
            return f"did you mean '{close[0]}'? "
    return ""


def _instance_not_found(name: str, world: World) -> GrammarError:
    hint = _did_you_mean(name, GLOBAL_WORDS, world.instances, {*INSTANCE_WORDS, *TENANT_WORDS})
    return GrammarError(f"instance '{name}' not found", 3,
                        hint + "mail-proxy list shows the instances")


def _tenant_not_found(tenant: str, instance: str) -> GrammarError:
    return GrammarError(f"tenant '{tenant}' not found in instance '{instance}'", 1,
                        _did_you_mean(tenant, {*INSTANCE_WORDS, *TENANT_WORDS})
                        + f"mail-proxy {instance} tenants list shows the tenants")
