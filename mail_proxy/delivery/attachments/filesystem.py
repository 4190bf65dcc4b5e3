"""filesystem mode (delivery.md §9.3): read a regular file inside a real attachment root."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Sequence

from mail_proxy.delivery.attachments.limits import ItemMeter, permanent
from mail_proxy.delivery.attachments.validate import inside


async def read_file(path: str, roots: Sequence[str], *, name: str, meter: ItemMeter) -> bytes:
    """The file's bytes; every check and the read run in a worker thread."""
    content = await asyncio.to_thread(_read, path, list(roots), name, meter.budget.per_item)
    meter.add(len(content))
    return content


def _read(path: str, roots: list[str], name: str, cap: int) -> bytes:
    if not roots:
        raise permanent(name, "path_not_allowed",
                        "filesystem attachments are disabled; set attachment_roots")
    real = os.path.realpath(path)
    real_roots = [os.path.realpath(r) for r in roots]
    if not any(inside(real, root) for root in real_roots):
        raise permanent(name, "path_not_allowed",
                        f"'{path}' resolves outside every attachment root")
    try:
        # O_NOFOLLOW closes the gap between realpath and open for the last component.
        # O_NONBLOCK keeps a FIFO planted under a root from hanging the thread.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise permanent(name, "attachment_not_found", f"file '{path}' does not exist") from None
    except PermissionError:
        raise permanent(name, "attachment_error", f"permission denied reading '{path}'") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise permanent(name, "path_not_allowed", f"'{path}' is a symbolic link") from None
        raise permanent(name, "attachment_error", f"cannot open '{path}': {exc.strerror}") from None
    if not _opened_inside(fd, real_roots):
        os.close(fd)
        raise permanent(name, "path_not_allowed",
                        f"'{path}' resolves outside every attachment root")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise permanent(name, "attachment_error", f"'{path}' is not a regular file")
    if info.st_size > cap:
        os.close(fd)
        raise permanent(name, "attachment_too_large", f"larger than max_attachment_bytes ({cap})")
    with os.fdopen(fd, "rb") as handle:
        try:
            # One byte past the cap tells a file that grew after fstat from one that fits.
            content = handle.read(cap + 1)
        except OSError as exc:
            raise permanent(name, "attachment_error",
                            f"cannot read '{path}': {exc.strerror}") from None
    if len(content) > cap:
        raise permanent(name, "attachment_too_large", f"larger than max_attachment_bytes ({cap})")
    return content


def _opened_inside(fd: int, real_roots: list[str]) -> bool:
    """Where the open file really is: a directory of the path swapped for a symbolic link
    between ``realpath`` and ``open`` (O_NOFOLLOW guards only the last component) shows
    here. Without /proc (not Linux) the check before the open is all there is."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return any(inside(opened, root) for root in real_roots)
