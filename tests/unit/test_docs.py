"""README's two commands and CI must not drift apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_two_commands() -> None:
    first, second = readme_commands()[:2]
    assert first == "pip install . && mail-proxy start demo"
    assert "pytest" in second and second.startswith("pip install")


def test_ci_runs_readmes_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci


def test_every_docs_link_in_readme_exists() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(((?:docs/|LICENSE)[^)#]*)\)", text):
        assert (ROOT / target).exists(), target
