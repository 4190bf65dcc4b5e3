"""filesystem attachments: a directory swapped for a symbolic link between the root check
and the open (O_NOFOLLOW only guards the last component) is still refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mail_proxy.delivery.attachments import filesystem
from mail_proxy.errors import PermanentFailure


def test_a_directory_swapped_after_the_check_is_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (root / "docs" / "a.pdf").write_bytes(b"inside")
    (outside / "a.pdf").write_bytes(b"private key")
    real_open = os.open

    def swap_then_open(path: str, flags: int, *args: int) -> int:
        os.rename(root / "docs", tmp_path / "moved")
        os.symlink(outside, root / "docs")  # what a writer inside the root could do
        monkeypatch.setattr(filesystem.os, "open", real_open)
        return real_open(path, flags, *args)

    assert filesystem._read(str(root / "docs" / "a.pdf"), [str(root)], "a.pdf", 100) == b"inside"
    monkeypatch.setattr(filesystem.os, "open", swap_then_open)
    with pytest.raises(PermanentFailure) as refused:
        filesystem._read(str(root / "docs" / "a.pdf"), [str(root)], "a.pdf", 100)
    assert refused.value.code == "path_not_allowed"
