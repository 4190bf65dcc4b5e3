"""tail and follow of instance logs, including a rotation while following."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


def test_reopen_files_writes_to_the_path_again(tmp_path) -> None:
    """SIGHUP reopens the log files (cli.md §9.2): after logrotate moved the file away,
    lines went to the moved file until the next size-based rotation."""
    import logging
    import logging.handlers

    from mail_proxy.instance.logs import reopen_files

    path = tmp_path / "mail-proxy.log"
    logger = logging.getLogger("test-reopen")
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=10**6, backupCount=1)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("before")
        path.rename(tmp_path / "mail-proxy.log.1")  # what logrotate does
        reopen_files(logger)
        logger.info("after")
        handler.flush()
        assert path.read_text() == "after\n"
        assert (tmp_path / "mail-proxy.log.1").read_text() == "before\n"
    finally:
        logger.removeHandler(handler)
        handler.close()


def worker_log(tmp_path: Path, log_format: str, emit: Callable[[], None]) -> str:
    """What the worker's logging (as ``serve`` sets it up) writes to its log file for the
    records ``emit`` makes; the test's own logging is put back afterwards."""
    import logging
    from types import SimpleNamespace

    from mail_proxy.server import _setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        _setup_logging(SimpleNamespace(log_level="info", log_format=log_format,
                                       folder=tmp_path))
        emit()
        for handler in root.handlers:
            handler.flush()
        return (tmp_path / "logs" / "mail-proxy.log").read_text(encoding="utf-8")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_json_log_format_writes_one_json_object_per_line(tmp_path: Path) -> None:
    import io
    import json
    import logging

    def emit() -> None:
        log = logging.getLogger("mail_proxy.test")
        log.warning("account %s/%s says \"hi\" with 'quotes' and a\nnewline", "acme", "main")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("internal error while sending %s", "acme/m-1")

    lines = [json.loads(line) for line in io.StringIO(worker_log(tmp_path, "json", emit))]
    assert len(lines) == 2
    assert lines[0]["message"] == "account acme/main says \"hi\" with 'quotes' and a\nnewline"
    assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "mail_proxy.test"
    assert lines[1]["message"] == "internal error while sending acme/m-1"
    assert "ValueError: boom" in lines[1]["exc"] and lines[1]["ts"]


def test_library_errors_the_worker_handles_are_one_line(tmp_path: Path) -> None:
    import logging

    def emit() -> None:
        try:
            raise ConnectionError("the database system is shutting down")
        except ConnectionError:
            logging.getLogger("asyncpg.pool").warning(
                "Failed to restore the pool connection floor; retrying", exc_info=True)

    text = worker_log(tmp_path, "text", emit)
    assert "Traceback" not in text and text.count("\n") == 1
    assert "retrying (ConnectionError: the database system is shutting down)" in text
