"""Interactive prompts: the only module that imports questionary (cli.md §7).

Prompts appear only on a terminal; every prompt has a flag twin. Ctrl-C inside a prompt
raises KeyboardInterrupt, which the CLI edge turns into exit 130 with nothing written.
"""

from __future__ import annotations

from typing import Any


def _ask(question: Any) -> Any:
    # unsafe_ask lets Ctrl-C propagate as KeyboardInterrupt instead of returning None
    return question.unsafe_ask()


def confirm_by_typing(name: str) -> bool:
    """Ask the user to type ``name`` to confirm a destructive action."""
    import questionary

    answer = _ask(questionary.text(f"Type the instance name ({name}) to delete it:"))
    return (answer or "").strip() == name


def confirm(message: str, default: bool = True) -> bool:
    import questionary

    return bool(_ask(questionary.confirm(message, default=default)))


def text(message: str, default: str = "", secret: bool = False) -> str:
    import questionary

    question = (questionary.password(message) if secret
                else questionary.text(message, default=default))
    return str(_ask(question) or "")


def select(message: str, choices: list[str], default: str | None = None) -> str:
    import questionary

    return str(_ask(questionary.select(message, choices=choices, default=default)))
