"""Shell completion: the scripts, ``completion show|install``, and the candidate engine.

The shell scripts are thin: they call ``mail-proxy __complete WORD…`` (the words after the
program name, the last one being the word under the cursor) and offer what it prints, one
candidate a line. The engine reuses the grammar, so completion always agrees with parsing.
Regenerate the checked-in copies with ``python -m mail_proxy.cli.completion completions``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import EXIT_USAGE, abort, out

SHELLS = ("bash", "zsh", "fish")
BEGIN, END = "# >>> mail-proxy completion >>>", "# <<< mail-proxy completion <<<"

SCRIPTS = {
    "bash": """\
# bash completion for mail-proxy (generated: mail-proxy completion show bash)
_mail_proxy_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(mail-proxy __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _mail_proxy_complete mail-proxy
""",
    "zsh": """\
#compdef mail-proxy
# zsh completion for mail-proxy (generated: mail-proxy completion show zsh)
_mail_proxy() {
    local -a candidates
    candidates=(${(f)"$(mail-proxy __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    if (( ${#candidates} )); then
        compadd -a candidates
    else
        _files
    fi
}
# compdef exists only once the completion system is loaded; a ~/.zshrc without compinit
# would otherwise print "command not found: compdef" at every new shell
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit -i; }
compdef _mail_proxy mail-proxy
""",
    "fish": """\
# fish completion for mail-proxy (generated: mail-proxy completion show fish)
function __mail_proxy_complete
    set -l words (commandline -opc) (commandline -ct)
    mail-proxy __complete $words[2..-1] 2>/dev/null
end
complete -c mail-proxy -f -a '(__mail_proxy_complete)'
""",
}

# positional values completed from the data: command path -> kind
_VALUE_KINDS = {
    ("tenants", "show"): "tenant", ("tenants", "update"): "tenant",
    ("tenants", "delete"): "tenant", ("tenants", "api-key", "create"): "tenant",
    ("tenants", "api-key", "revoke"): "tenant",
    ("accounts", "show"): "account", ("accounts", "update"): "account",
    ("accounts", "delete"): "account", ("accounts", "test"): "account",
    ("config", "set"): "setting", ("config", "reset"): "setting",
}
_INSTANCE_ARG = ("start", "stop", "restart", "status", "delete", "logs", "serve", "use")


def _sub_words(app: Any, path: list[str], current: str) -> list[str]:
    """Sub-command names (or options when ``current`` starts with '-') below ``path``."""
    command = typer.main.get_command(app)
    for word in path:
        subs = getattr(command, "commands", None)
        if subs is not None and word in subs:
            command = subs[word]
        elif not word.startswith("-"):
            break
    if current.startswith("-"):
        # secondary names are the "off" side of a boolean pair: --no-api-key, --inactive
        names = [opt for param in command.params
                 for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]]
        return [opt for opt in names if opt.startswith("--")] + ["--help"]
    if getattr(command, "commands", None) is not None:
        return sorted(command.commands)  # type: ignore[attr-defined]
    return []


def candidates(words: list[str]) -> list[str]:
    """What may replace the last of ``words`` (the words after ``mail-proxy``)."""
    from mail_proxy.cli.application import disk_world
    from mail_proxy.cli.grammar import GrammarError, context_instance, resolve_argv
    from mail_proxy.instance import lookup, paths

    *before, current = words or [""]
    world = disk_world()
    if not before:
        found = list(paths.GLOBAL_WORDS) + sorted(world.instances)
        context = context_instance(world)[0]
        if context:
            # the grammar (step 2) also takes a tenant id of the context instance here
            found += (list(paths.INSTANCE_WORDS) + list(paths.TENANT_ONLY_WORDS)
                      + lookup.tenant_ids(context))
        return _matching(found, current)
    if before[0] in paths.GLOBAL_WORDS:
        if before[0] == "completion":
            return _matching(["show", "install"] if len(before) == 1 else list(SHELLS), current)
        if before == ["use"] and "/" in current:
            return _matching(_use_contexts(current, world), current)
        if len(before) == 1 and before[0] in _INSTANCE_ARG and not current.startswith("-"):
            return _matching(sorted(world.instances), current)
        from mail_proxy.cli.main_app import global_app

        return _matching(_sub_words(global_app, before, current), current)
    try:
        route = resolve_argv(before, world)
    except GrammarError:
        return []
    instance = route.instance or ""
    at_instance = route.instance_source == "argv" and before == [instance]
    at_tenant = route.tenant_source == "argv" and before[-1] == route.tenant
    if at_instance:
        found = (list(paths.INSTANCE_WORDS) + list(paths.TENANT_ONLY_WORDS)
                 + lookup.tenant_ids(instance))
        return _matching(found, current)
    if at_tenant:
        return _matching(list(paths.TENANT_WORDS), current)
    kind = _VALUE_KINDS.get(tuple(route.args))
    if kind == "setting" and not current.startswith("-"):
        return _matching(_setting_names(), current)
    if kind == "tenant" and not current.startswith("-"):
        return _matching(lookup.tenant_ids(instance), current)
    if kind == "account" and route.tenant and not current.startswith("-"):
        return _matching(lookup.account_ids(instance, route.tenant), current)
    from mail_proxy.cli import instance_app, tenant_app

    app = tenant_app.app if route.level == "tenant" else instance_app.app
    return _matching(_sub_words(app, route.args, current), current)


def _use_contexts(current: str, world: Any) -> list[str]:
    """``use inst/<TAB>`` → ``inst/acme``…; ``use /<TAB>`` → the context instance's tenants."""
    from mail_proxy.cli.grammar import context_instance
    from mail_proxy.instance import lookup

    instance = current.partition("/")[0]
    if instance:
        prefix = instance
    else:
        prefix, instance = "", context_instance(world)[0] or ""
    if instance not in world.instances:
        return []
    return [f"{prefix}/{tenant}" for tenant in lookup.tenant_ids(instance)]


def _setting_names() -> list[str]:
    """``config set|reset`` keys: runtime settings (settings.md §2), then process ones."""
    from mail_proxy.cli.settings import PROCESS_KEYS
    from mail_proxy.settings import SETTING_NAMES

    return sorted(SETTING_NAMES) + [k for k in PROCESS_KEYS if k not in SETTING_NAMES]


def _matching(found: list[str], current: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in found:
        if word.startswith(current):
            seen.setdefault(word, None)
    return list(seen)


def complete_main(words: list[str]) -> int:
    """``mail-proxy __complete …``: never fails loudly, the shell shows nothing on error."""
    try:
        for word in candidates(words):
            print(word)
    except Exception:  # a broken completion must never print a traceback into the prompt
        if os.environ.get("MAIL_PROXY_DEBUG") == "1":
            raise
    return 0


def _shell(shell: str | None) -> str:
    shell = shell or Path(os.environ.get("SHELL", "")).name
    if shell not in SHELLS:
        abort(f"unsupported shell '{shell or '?'}': use bash, zsh or fish", EXIT_USAGE)
    return shell


ShellArg = Annotated[str | None, typer.Argument(help="bash, zsh or fish (default: $SHELL).",
                                                show_default=False)]
app = typer.Typer(rich_markup_mode=None, help="Shell completion scripts.",
                  no_args_is_help=True, add_completion=False)


@app.command("show")
def show(shell: ShellArg = None) -> None:
    """Print the completion script."""
    sys.stdout.write(SCRIPTS[_shell(shell)])


@app.command("install")
def install(shell: ShellArg = None) -> None:
    """Add the completion script to the shell's start-up files (idempotent)."""
    from mail_proxy.instance.paths import os_errors

    name = _shell(shell)
    home = Path.home()
    if not home.is_dir():
        # never create a home folder (as root, mkdir -p would happily make /nonexistent)
        abort(f"cannot install completion in {home}: the home folder does not exist",
              EXIT_USAGE, "check $HOME")
    if name == "fish":
        target = home / ".config" / "fish" / "completions" / "mail-proxy.fish"
        with os_errors("write", target):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(SCRIPTS["fish"], encoding="utf-8")
    else:
        target = home / (".bashrc" if name == "bash" else ".zshrc")
        with os_errors("write", target):
            target.write_text(_with_block(target, SCRIPTS[name]), encoding="utf-8")
    out(f"completion for {name} installed in {target}; open a new shell to use it")


def _with_block(target: Path, script: str) -> str:
    """The start-up file with our block replaced (or appended); the rest is kept."""
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    block = f"{BEGIN}\n{script}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1].lstrip("\n")
    return text + ("\n" if text and not text.endswith("\n") else "") + block


def write_scripts(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shell, script in SCRIPTS.items():
        (folder / f"mail-proxy.{shell}").write_text(script, encoding="utf-8")


if __name__ == "__main__":
    write_scripts(Path(sys.argv[1] if len(sys.argv) > 1 else "completions"))
