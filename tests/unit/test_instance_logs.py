"""tail and follow of instance logs, including a rotation while following."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mail_proxy.instance.logs import follow, tail


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert tail(log, 5) == []
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert tail(log, 3) == ["line 7", "line 8", "line 9"]
    assert tail(log, 0) == []


def test_follow_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old\n")
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in follow(log, poll=0.02, should_stop=done.is_set):
            seen.append(line)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    with log.open("a") as fh:
        fh.write("one\n")
    time.sleep(0.1)
    log.rename(tmp_path / "x.log.1")  # what RotatingFileHandler does
    log.write_text("two\nthree\n")
    deadline = time.monotonic() + 3
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    thread.join(2)
    assert seen == ["one", "two", "three"]
