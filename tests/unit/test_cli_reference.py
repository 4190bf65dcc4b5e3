"""docs/reference/cli.md is generated from --help and must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from mail_proxy.cli.reference import render

ROOT = Path(__file__).resolve().parents[2]


def test_reference_matches_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    saved = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    assert saved == render(), (
        "docs/reference/cli.md drifted: run python -m mail_proxy.cli.reference "
        "docs/reference/cli.md")
    assert "### `mail-proxy NAME TENANT accounts add`" in saved
