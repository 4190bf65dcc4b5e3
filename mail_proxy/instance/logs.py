"""Instance log files: the supervisor's rotating log, and tail/follow for ``mail-proxy logs``."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

SUPERVISOR_LOG = "supervisor.log"
WORKER_LOG = "mail-proxy.log"
SUPERVISOR_MAX_BYTES = 1024 * 1024
SUPERVISOR_BACKUPS = 3


def log_path(folder: Path, supervisor: bool = False) -> Path:
    return folder / "logs" / (SUPERVISOR_LOG if supervisor else WORKER_LOG)


class OneLineErrors(logging.Filter):
    """A library's records of conditions the worker handles (asyncpg's pool losing the
    server during a restart) as one line with the exception's text, not a traceback:
    tracebacks in the log are kept for bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


class JsonLineFormatter(logging.Formatter):
    """``log_format = "json"``: one JSON object per line (ts, level, logger, message, and
    the traceback as ``exc`` when there is one), so a log shipper can read every line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": self.formatTime(record), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class _RawFormatter(logging.Formatter):
    """Worker output is copied as is; the supervisor's own lines get a prefix."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "raw", False):
            return record.getMessage()
        return super().format(record)


def supervisor_logger(folder: Path, *, to_terminal: bool) -> logging.Logger:
    """The supervisor's logger: logs/supervisor.log, 1 MiB x 3, plus stderr in foreground."""
    logs = folder / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    logger = logging.getLogger("mail_proxy.supervisor")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = _RawFormatter("%(asctime)s supervisor[%(process)d] %(levelname)s %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        logs / SUPERVISOR_LOG, maxBytes=SUPERVISOR_MAX_BYTES, backupCount=SUPERVISOR_BACKUPS,
        encoding="utf-8")
    file_handler.setFormatter(fmt)
    logger.addHandler(file_handler)
    if to_terminal:
        term = logging.StreamHandler(sys.stderr)
        term.setFormatter(fmt)
        logger.addHandler(term)
    return logger


def reopen_files(logger: logging.Logger) -> None:
    """SIGHUP (cli.md §9.2): write to the log files' current paths again, so a file
    rotated away by logrotate or deleted is not written to unseen until the next
    size-based rotation."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            with handler.lock:  # type: ignore[union-attr]
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` (empty when it does not exist)."""
    if lines <= 0:
        return []
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            # more lines than a deque can be told to hold is "all of them"
            return [line.rstrip("\n") for line in deque(fh, maxlen=min(lines, sys.maxsize))]
    except FileNotFoundError:
        return []


def follow(path: Path, *, poll: float = 0.25, from_start: bool = False,
           should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """Yield lines appended to ``path`` (from its current end), across rotations.

    Rotation renames the file and starts a new one: we notice a different inode or a file
    shorter than our position, drain the old handle, and reopen the new file from its start.
    """
    handle = None
    inode = None
    partial = ""
    at_start = from_start
    while not should_stop():
        if handle is None:
            try:
                handle = path.open("r", encoding="utf-8", errors="replace")
            except FileNotFoundError:
                at_start = True  # whatever appears later is new
                time.sleep(poll)
                continue
            inode = os.fstat(handle.fileno()).st_ino
            if not at_start:
                handle.seek(0, os.SEEK_END)
            at_start = True  # every later (re)open is a new file: read it whole
        chunk = handle.read()
        if chunk:
            partial += chunk
            *done, partial = partial.split("\n")
            yield from done
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != inode or current.st_size < handle.tell():
            handle.close()
            handle = None
            continue
        time.sleep(poll)
    if handle is not None:
        handle.close()
