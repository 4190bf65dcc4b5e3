"""Interactive prompts: the only module that imports questionary (cli.md §7).

Prompts appear only on a terminal; every prompt has a flag twin. Ctrl-C inside a prompt
raises KeyboardInterrupt, which the CLI edge turns into exit 130 with nothing written.
"""

from __future__ import annotations

import sys
from typing import Any


def _ask(question: Any) -> Any:
    # unsafe_ask lets Ctrl-C propagate as KeyboardInterrupt instead of returning None
    try:
        return question.unsafe_ask()
    except KeyboardInterrupt:
        interrupted()
        raise
    except EOFError:
        # Ctrl-D leaves a prompt as Ctrl-C does, and says so too (CLI hunt: it ended with
        # exit 130 and only blank lines)
        interrupted()
        raise KeyboardInterrupt from None


def interrupted() -> None:
    """One line saying why the command stopped. Typer turns the KeyboardInterrupt into exit
    130 silently, and the prompt's own line may still be open."""
    print("\ninterrupted: nothing was written", file=sys.stderr, flush=True)


def confirm_by_typing(name: str) -> bool:
    """Ask the user to type ``name`` to confirm a destructive action."""
    import questionary

    answer = _ask(questionary.text(f"To delete it, type the instance name, {name}:"))
    return (answer or "").strip() == name


def confirm(message: str, default: bool = True) -> bool:
    import questionary

    # auto_enter off: the Enter a user types after "n" would otherwise answer the next
    # question with its default (docs audit: "n⏎" at "Test the connection now?" also said
    # yes to "Create account?")
    return bool(_ask(questionary.confirm(message, default=default, auto_enter=False)))


def with_default(message: str, default: str) -> str:
    """The question with its default shown: ``Display name (acme)``, or
    ``Messages per minute (0 = unlimited; default 0)`` when it already ends in a remark."""
    if not default:
        return message
    if message.endswith(")"):
        return f"{message[:-1]}; default {default})"
    return f"{message} ({default})"


def text(message: str, default: str = "", secret: bool = False) -> str:
    """One line of text; an empty answer is ``default``.

    The default is shown in the question, never typed into the answer: questionary's own
    ``default=`` pre-fills the line, so typing a name after it appended to it (``acme`` +
    ``Acme Corp`` gave ``acmeAcme Corp``) unless the user first erased it.
    """
    import questionary

    question = (questionary.password(message) if secret
                else questionary.text(with_default(message, default)))
    answer = str(_ask(question) or "")
    return answer if answer.strip() or not default else default


def select(message: str, choices: list[str], default: str | None = None) -> str:
    import questionary

    return str(_ask(questionary.select(message, choices=choices, default=default)))
