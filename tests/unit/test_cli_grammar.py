"""Every row of the argv grammar (cli.md §1) and the context rules (§1.1)."""

from __future__ import annotations

import pytest

from mail_proxy.cli.grammar import GrammarError, Route, World, resolve_argv

TENANTS = {"main": {"acme", "beta"}, "other": {"zeta"}}


def world(instances=("main", "other"), env=None, current=(None, None)) -> World:
    return World(instances=frozenset(instances), env=env or {}, current=current,
                 tenant_ids=lambda name: TENANTS.get(name, set()))


def fail(argv: list[str], w: World) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        resolve_argv(argv, w)
    return info.value


@pytest.mark.parametrize("word", ["list", "start", "stop", "restart", "status", "delete", "logs",
                                  "serve", "use", "current", "completion"])
def test_global_words_run_globally(word: str) -> None:
    assert resolve_argv([word, "x"], world()) == Route("global", [word, "x"])


def test_options_and_nothing_go_to_the_global_app() -> None:
    assert resolve_argv([], world()).level == "global"
    assert resolve_argv(["--version"], world()).args == ["--version"]


def test_instance_name_is_consumed_and_defaults_to_info() -> None:
    r = resolve_argv(["main"], world())
    assert (r.level, r.args, r.instance, r.instance_source) == ("instance", ["info"], "main",
                                                                "argv")
    assert not r.used_context


@pytest.mark.parametrize("word", ["info", "stats", "token", "run-now", "config", "command-log",
                                  "rotate-key", "tenants"])
def test_instance_commands(word: str) -> None:
    r = resolve_argv(["main", word, "--json"], world())
    assert (r.level, r.args, r.tenant) == ("instance", [word, "--json"], None)


def test_tenant_after_instance_defaults_to_tenant_info() -> None:
    r = resolve_argv(["main", "acme"], world())
    assert (r.level, r.args, r.tenant, r.tenant_source) == ("tenant", ["info"], "acme", "argv")
    r = resolve_argv(["main", "acme", "accounts", "add", "a1"], world())
    assert (r.level, r.args) == ("tenant", ["accounts", "add", "a1"])
    assert r.instance == "main" and not r.used_context


def test_tenant_only_word_uses_the_context_tenant() -> None:
    r = resolve_argv(["main", "send", "a.eml"], world(env={"GMP_TENANT": "acme"}))
    assert (r.level, r.tenant, r.tenant_source, r.args) == ("tenant", "acme", "GMP_TENANT",
                                                            ["send", "a.eml"])
    assert r.used_context and r.notice == "(main/acme)"


def test_tenant_only_word_without_tenant_context_is_exit_2() -> None:
    err = fail(["main", "accounts", "list"], world())
    assert (err.exit_code, err.message) == (2, "no tenant given and no tenant context set")


def test_unknown_tenant_is_exit_1() -> None:
    err = fail(["main", "nobody"], world())
    assert (err.exit_code, err.message) == (1, "tenant 'nobody' not found in instance 'main'")


def test_unknown_first_word_is_exit_3() -> None:
    err = fail(["ghost", "info"], world())
    assert (err.exit_code, err.message) == (3, "instance 'ghost' not found")


def test_command_word_without_any_context_is_exit_3() -> None:
    err = fail(["tenants", "list"], world())
    assert (err.exit_code, err.message) == (3, "no instance given and no context set")


def test_context_instance_from_gmp_instance() -> None:
    r = resolve_argv(["tenants", "list"], world(env={"GMP_INSTANCE": "other"}))
    assert (r.instance, r.instance_source, r.args) == ("other", "GMP_INSTANCE",
                                                       ["tenants", "list"])
    assert r.notice == "(other)"


def test_gmp_instance_naming_no_folder_is_not_replaced_by_another_instance() -> None:
    # cli.md §1.1 falls through to .current; a mistyped name must not run the command on
    # another instance (docs/decisions/cli.md): the named one is used, and is not found.
    with pytest.raises(GrammarError, match=r"instance 'nope' \(from GMP_INSTANCE\) not found"):
        resolve_argv(["info"], world(env={"GMP_INSTANCE": "nope"}, current=("main", None)))


def test_environment_instance_when_a_database_variable_is_set() -> None:
    r = resolve_argv(["stats"], world(env={"GMP_DB_URL": "sqlite:///x.db"}))
    assert (r.instance, r.instance_source) == ("mail-proxy", "environment")
    r = resolve_argv(["stats"], world(env={"GMP_DB_PATH": "/x.db", "GMP_INSTANCE": "edge"}))
    assert r.instance == "edge"


def test_context_from_current_file_and_only_instance() -> None:
    r = resolve_argv(["info"], world(current=("other", None)))
    assert (r.instance, r.instance_source) == ("other", ".current")
    r = resolve_argv(["info"], world(instances=("main",)))
    assert (r.instance, r.instance_source) == ("main", "only")


def test_tenant_id_of_the_context_instance_as_first_word() -> None:
    r = resolve_argv(["acme", "messages", "list"], world(current=("main", None)))
    assert (r.level, r.instance, r.tenant, r.args) == ("tenant", "main", "acme",
                                                       ["messages", "list"])
    assert r.notice == "(main/acme)"


def test_current_tenant_applies_only_to_its_instance() -> None:
    w = world(current=("main", "acme"))
    assert resolve_argv(["send", "x.eml"], w).tenant == "acme"
    err = fail(["other", "send", "x.eml"], w)
    assert err.exit_code == 2
    w = world(current=(None, "acme"))  # "/acme": tenant only, kept for whatever instance
    assert resolve_argv(["main", "send"], w).tenant == "acme"


def test_info_and_run_now_after_instance_are_instance_versions() -> None:
    w = world(env={"GMP_TENANT": "acme"})
    assert resolve_argv(["main", "info"], w).level == "instance"
    assert resolve_argv(["main", "run-now"], w).level == "instance"
    assert resolve_argv(["main", "acme", "run-now"], w).level == "tenant"


def test_instance_name_wins_over_tenant_word() -> None:
    r = resolve_argv(["other", "zeta", "suspend"], world(current=("main", "acme")))
    assert (r.instance, r.tenant, r.args, r.used_context) == ("other", "zeta", ["suspend"],
                                                              False)


def test_a_mistyped_command_gets_a_suggestion() -> None:
    typo = fail(["stauts", "main"], world(instances=("main",)))
    assert (typo.exit_code, typo.message) == (3, "instance 'stauts' not found")
    assert typo.hint == "did you mean 'status'? mail-proxy list shows the instances"
    tenant_word = fail(["main", "tenant", "list"], world())
    assert tenant_word.hint == ("did you mean 'tenants'? mail-proxy main tenants list shows "
                                "the tenants")
    far = fail(["main", "zzz"], world())
    assert far.hint == "mail-proxy main tenants list shows the tenants"


@pytest.mark.parametrize(("argv", "expected"), [
    (["send", "--help"], Route("tenant", ["send", "--help"], "NAME", "TENANT", "argv", "argv")),
    (["tenants", "add", "-h"], Route("instance", ["tenants", "add", "-h"], "NAME", None,
                                     "argv")),
    (["other", "accounts", "add", "--help"],
     Route("tenant", ["accounts", "add", "--help"], "other", "TENANT", "argv", "argv")),
])
def test_help_of_a_command_needs_no_instance_or_tenant(argv: list[str],
                                                      expected: Route) -> None:
    """CLI hunt: a new user asking for a command's options got "no instance given"."""
    assert resolve_argv(argv, world()) == expected


def test_help_does_not_hide_an_unknown_name() -> None:
    with pytest.raises(GrammarError) as info:
        resolve_argv(["nosuch", "--help"], world())
    assert info.value.exit_code == 3
