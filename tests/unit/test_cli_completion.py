"""Completion scripts: checked-in copies must not drift, and bash really completes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mail_proxy.cli.completion import SCRIPTS, candidates
from mail_proxy.instance.config import create_instance

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_checked_in_scripts_match_the_generator(shell: str) -> None:
    saved = (ROOT / "completions" / f"mail-proxy.{shell}").read_text(encoding="utf-8")
    assert saved == SCRIPTS[shell], (
        "completions/ drifted: run python -m mail_proxy.cli.completion completions")


def test_candidates_follow_the_grammar() -> None:
    create_instance("main", "127.0.0.1", 18100, None)
    create_instance("mars", "127.0.0.1", 18101, None)
    assert candidates(["ma"]) == ["main", "mars"]
    assert candidates(["st"]) == ["start", "stop", "status"]
    assert candidates(["stop", ""]) == ["main", "mars"]
    assert candidates(["main", "tenants", ""]) == ["add", "api-key", "delete", "list", "show",
                                                   "update"]
    assert "rotate-key" in candidates(["main", ""])
    assert candidates(["list", "--j"]) == ["--json"]
    assert candidates(["completion", "show", "z"]) == ["zsh"]
    assert candidates(["ghost", ""]) == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_end_to_end(tmp_path: Path) -> None:
    create_instance("main", "127.0.0.1", 18102, None)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "mail-proxy"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mail_proxy "$@"\n')
    shim.chmod(0o755)
    script = ROOT / "completions" / "mail-proxy.bash"
    probe = (f'source "{script}"; COMP_WORDS=(mail-proxy main ten); COMP_CWORD=2; '
             '_mail_proxy_complete; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True,
                       env=env, timeout=20)
    assert r.stdout.split() == ["tenants"], r.stderr
    probe = probe.replace("(mail-proxy main ten)", "(mail-proxy stop '')")
    r = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True,
                       env=env, timeout=20)
    assert r.stdout.split() == ["main"], r.stderr


def test_install_is_idempotent(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "mail_proxy", "completion", "install", "bash"],
                           capture_output=True, text=True, env=env, timeout=20)
        assert r.returncode == 0, r.stderr
    text = (tmp_path / ".bashrc").read_text()
    assert text.count("# >>> mail-proxy completion >>>") == 1
    assert SCRIPTS["bash"] in text


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads_in_a_zshrc_without_compinit(tmp_path: Path) -> None:
    # zsh -f: no startup files, so compdef is not defined until the script loads compinit
    r = subprocess.run(["zsh", "-f", "-c", f"source {ROOT / 'completions' / 'mail-proxy.zsh'}"
                        " && whence -w _mail_proxy"], capture_output=True, text=True,
                       env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
    assert r.returncode == 0 and "command not found" not in r.stderr, r.stderr
    assert "_mail_proxy: function" in r.stdout
