"""Flag-or-prompt values for ``tenants add`` and ``accounts add`` (cli.md §7).

A value given by flag is never asked. On a terminal a missing value is prompted (through
``cli.prompts``, the only questionary user); without one a required value is exit 2 naming
its flag and an optional one silently takes its default. :attr:`Asker.asked` tells whether
anything was prompted, which decides if the final ``Create …? [Y/n]`` is shown.
"""

from __future__ import annotations

from collections.abc import Callable

from mail_proxy.cli.application import EXIT_USAGE, CliExit, err
from mail_proxy.cli.dataview import missing

Check = Callable[[str], str | None]  # returns a problem sentence, or None when fine


def field_check(validator: Callable[[str], object], fallback: str) -> Check:
    """A prompt check saying what the API would answer about the field, at its prompt
    instead of after every other one."""
    def check(text: str) -> str | None:
        from mail_proxy.manager.fields import Bad

        try:
            validator(text)
        except Bad as bad:
            return bad.items[0][2] if bad.items else fallback
        return None
    return check


class Asker:
    def __init__(self, can_prompt: bool) -> None:
        self.can_prompt = can_prompt
        self.asked = False

    def text(self, label: str, given: str | None, *, flag: str, default: str | None = None,
             required: bool = False, secret: bool = False, check: Check | None = None) -> str:
        if given is not None:
            return given
        if not self.can_prompt:
            if required:
                raise missing(flag)
            return default or ""
        from mail_proxy.cli import prompts

        self.asked = True
        while True:
            answer = prompts.text(label, default=default or "", secret=secret).strip()
            if not answer and default:
                answer = default
            problem = (check(answer) if check else None) if (answer or required) else None
            if required and not answer:
                problem = "a value is required"
            if problem is None:
                return answer
            err(f"  {problem}")

    def integer(self, label: str, given: int | None, *, flag: str, default: int,
                low: int, high: int | None = None) -> int:
        if given is not None:
            return given

        def check(text: str) -> str | None:
            text = text.strip()
            # "²" passes isdigit() and fails int(), as do 4,300 digits
            if not (text.isascii() and text.isdigit()) or len(text) > 18:
                return "enter a whole number"
            value = int(text)
            if value < low or (high is not None and value > high):
                return f"enter a number from {low}" + (f" to {high}" if high else " upward")
            return None

        return int(self.text(label, None, flag=flag, default=str(default), check=check))

    def select(self, label: str, given: str | None, *, flag: str, choices: list[str],
               default: str) -> str:
        if given is not None:
            return given
        if not self.can_prompt:
            return default
        from mail_proxy.cli import prompts

        self.asked = True
        return prompts.select(label, choices, default=default)

    def confirm(self, label: str, given: bool | None, *, default: bool) -> bool:
        if given is not None:
            return given
        if not self.can_prompt:
            return default
        from mail_proxy.cli import prompts

        self.asked = True
        return prompts.confirm(label, default=default)


def confirm_write(question: str, *, asker: Asker, yes: bool) -> bool:
    """The final ``Create …?`` after a summary: skipped with --yes or when nothing was asked."""
    if yes or not asker.asked:
        return True
    from mail_proxy.cli import prompts

    return prompts.confirm(question, default=True)


def confirm_destructive(question: str, *, yes: bool, can_prompt: bool) -> bool:
    """Deletes and purges: ``--yes``, else a prompt, else exit 2 naming ``--yes``."""
    if yes:
        return True
    if not can_prompt:
        raise CliExit(EXIT_USAGE, "confirmation needed (no terminal to ask; pass --yes)")
    from mail_proxy.cli import prompts

    return prompts.confirm(question, default=False)
