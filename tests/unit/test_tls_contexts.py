"""Pools with the same trust share one TLS context: one holding the system store takes about
840 KB, and was built once per account pool."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from mail_proxy.delivery import tls
from mail_proxy.delivery.tls import context_for

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def contexts(*calls: tuple[bool, str | None]) -> list[ssl.SSLContext]:
    async def run() -> list[ssl.SSLContext]:
        return [await context_for(verify=v, ca_file=f) for v, f in calls]
    return asyncio.run(run())


def test_the_same_trust_is_one_context() -> None:
    a, b, c, d = contexts((True, None), (True, None), (False, None), (False, "/nowhere"))
    assert a is b
    assert c is not a and c.verify_mode == ssl.CERT_NONE
    assert d is c  # without checks the CA file plays no part


@pytest.mark.skipif(not CA.exists(), reason="no system CA bundle to copy")
def test_a_ca_file_is_shared_until_it_changes(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(CA.read_bytes())
    first, again, system = contexts((True, str(ca)), (True, str(ca)), (True, None))
    assert first is again and first is not system
    ca.write_bytes(CA.read_bytes() + b"\n")  # a renewed CA written in place
    os.utime(ca, ns=(1, 1))
    (renewed,) = contexts((True, str(ca)))
    assert renewed is not first


def test_a_missing_ca_file_still_fails(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        contexts((True, str(tmp_path / "missing.pem")))


def test_the_number_of_kept_contexts_is_bounded(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not CA.exists():
        pytest.skip("no system CA bundle to copy")
    monkeypatch.setattr(tls, "SHARED_CONTEXTS", 2)
    files = []
    for i in range(4):
        files.append(tmp_path / f"ca{i}.pem")
        files[-1].write_bytes(CA.read_bytes())
    contexts(*[(True, str(f)) for f in files])
    assert len(tls._shared) == 2
