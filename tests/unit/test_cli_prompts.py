"""``cli.prompts.text``: a default is shown in the question, never pre-typed in the answer."""

from __future__ import annotations

from typing import Any

import pytest

from mail_proxy.cli import prompts


class _Question:
    def __init__(self, answer: str) -> None:
        self.answer = answer

    def unsafe_ask(self) -> str:
        return self.answer


def _fake_questionary(monkeypatch: pytest.MonkeyPatch, answer: str) -> list[Any]:
    import questionary

    calls: list[Any] = []

    def text(message: str, **kwargs: Any) -> _Question:
        calls.append((message, kwargs))
        return _Question(answer)

    monkeypatch.setattr(questionary, "text", text)
    return calls


@pytest.mark.parametrize(("answer", "expected"), [("", "acme"), ("  ", "acme"),
                                                  ("Acme Corp", "Acme Corp")])
def test_text_shows_the_default_and_takes_it_on_empty(monkeypatch: pytest.MonkeyPatch,
                                                      answer: str, expected: str) -> None:
    calls = _fake_questionary(monkeypatch, answer)
    assert prompts.text("Display name", default="acme") == expected
    # no default= keyword: questionary would pre-fill it and a typed name would append
    assert calls == [("Display name (acme)", {})]


def test_text_without_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_questionary(monkeypatch, "")
    assert prompts.text("Username (empty = no authentication)") == ""
    assert calls == [("Username (empty = no authentication)", {})]


def test_with_default_joins_a_remark() -> None:
    assert prompts.with_default("Port", "587") == "Port (587)"
    assert prompts.with_default("Messages per hour (0 = unlimited)", "0") == (
        "Messages per hour (0 = unlimited; default 0)")
    assert prompts.with_default("Sync path", "") == "Sync path"


def test_a_number_prompt_asks_again_after_a_digit_int_cannot_read(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """"²" passed str.isdigit() and then failed int(): "unexpected ValueError", exit 1."""
    from mail_proxy.cli.asking import Asker

    answers = iter(["²", "9" * 5000, "25"])
    monkeypatch.setattr(prompts, "text", lambda label, **kw: next(answers))
    assert Asker(can_prompt=True).integer("Port", None, flag="--port", default=587,
                                          low=1, high=65535) == 25
    assert capsys.readouterr().err.count("enter a whole number") == 2
