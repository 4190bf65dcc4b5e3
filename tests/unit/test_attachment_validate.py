"""Enqueue-time attachment checks (messages.md §2 check 17)."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from mail_proxy.delivery.attachments.validate import normalise_attachments
from mail_proxy.errors import RejectedMessage
from mail_proxy.settings import RuntimeSettings


def settings(**changes: object) -> RuntimeSettings:
    return dataclasses.replace(RuntimeSettings(), **changes)


def norm(items: object, *, base_url: str | None = "https://app.acme.test", **changes: object):
    return normalise_attachments(items, settings=settings(**changes), tenant_base_url=base_url)


def rejected(items: object, **kwargs: object) -> RejectedMessage:
    with pytest.raises(RejectedMessage) as info:
        norm(items, **kwargs)
    return info.value


def test_modes_are_inferred_and_every_key_is_present() -> None:
    out = norm([
        {"filename": "a.txt", "storage_path": "base64:aGVsbG8="},
        {"filename": "b.pdf", "storage_path": "https://files.acme.test/b.pdf"},
        {"filename": "c.pdf", "storage_path": "/srv/files/c.pdf"},
        {"filename": "d.pdf", "storage_path": "[https://x.acme.test/get]id=4"},
        {"filename": "e.pdf", "storage_path": "doc-5"},
    ], attachment_roots=["/srv/files"])
    assert [a["fetch_mode"] for a in out] == ["base64", "http_url", "filesystem", "endpoint",
                                              "endpoint"]
    assert out[0]["storage_path"] == "aGVsbG8="
    for item in out:
        assert set(item) == {"filename", "storage_path", "fetch_mode", "mime_type",
                             "content_md5", "content_id", "auth"}


def test_base64_variants_are_canonicalised() -> None:
    raw = bytes(range(250))
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    spaced = " ".join(urlsafe[i:i + 10] for i in range(0, len(urlsafe), 10))
    out = norm([{"filename": "x.bin", "storage_path": spaced, "fetch_mode": "base64"}])
    assert base64.b64decode(out[0]["storage_path"], validate=True) == raw


@pytest.mark.parametrize("text", ["base64:@@@@", "base64:abcde", "base64:ab+-"])
def test_invalid_base64_is_rejected(text: str) -> None:
    err = rejected([{"filename": "x.bin", "storage_path": text}])
    assert err.rejection.code == "invalid_attachment"
    assert err.rejection.field == "attachments[0].storage_path"
    assert "'x.bin'" in err.rejection.reason


def test_base64_over_the_cap_is_too_large() -> None:
    text = "base64:" + base64.b64encode(b"x" * 11).decode()
    err = rejected([{"filename": "x.bin", "storage_path": text}], max_attachment_bytes=10)
    assert err.rejection.code == "attachment_too_large"
    assert norm([{"filename": "x.bin", "storage_path": text}], max_attachment_bytes=11)


def test_filesystem_needs_roots_and_stays_inside_them() -> None:
    item = {"filename": "a.pdf", "storage_path": "/srv/files/a.pdf"}
    assert rejected([item]).rejection.code == "filesystem_disabled"
    escape = {"filename": "a.pdf", "storage_path": "/srv/files/../secret/a.pdf"}
    err = rejected([item, escape], attachment_roots=["/srv/files"])
    assert (err.rejection.code, err.rejection.field) == (
        "path_not_allowed", "attachments[1].storage_path")
    sibling = {"filename": "a.pdf", "storage_path": "/srv/files2/a.pdf"}
    assert rejected([sibling], attachment_roots=["/srv/files"]).rejection.code == \
        "path_not_allowed"
    relative = {"filename": "a", "storage_path": "a.pdf", "fetch_mode": "filesystem"}
    assert rejected([relative], attachment_roots=["/srv"]).rejection.code == "path_not_allowed"
    dotted = {"filename": "a.pdf", "storage_path": "/srv/files/./x/../a.pdf"}
    assert norm([dotted], attachment_roots=["/srv/files"])[0]["storage_path"] == \
        "/srv/files/a.pdf"


def test_endpoint_and_mount_forms() -> None:
    err = rejected([{"filename": "a", "storage_path": "doc-1"}], base_url=None)
    assert err.rejection.code == "endpoint_not_configured"
    # The explicit form carries its own URL, so no client_base_url is needed.
    assert norm([{"filename": "a", "storage_path": "[https://h.test/x]p"}], base_url=None)
    bad = rejected([{"filename": "a", "storage_path": "[ftp://h.test/x]p"}])
    assert bad.rejection.code == "invalid_attachment"
    mount = rejected([{"filename": "a", "storage_path": "s3docs:reports/a.pdf"}])
    assert mount.rejection.code == "storage_not_configured"
    explicit = norm([{"filename": "a", "storage_path": "s3docs:a", "fetch_mode": "endpoint"}])
    assert explicit[0]["fetch_mode"] == "endpoint"


@pytest.mark.parametrize(("item", "field"), [
    ({"filename": "a", "storage_path": "x", "extra": 1}, "attachments[0].extra"),
    ({"filename": "a/b", "storage_path": "x"}, "attachments[0].filename"),
    ({"filename": "{MD5:" + "a" * 32 + "}", "storage_path": "x"}, "attachments[0].filename"),
    ({"filename": "a", "storage_path": ""}, "attachments[0].storage_path"),
    ({"filename": "a", "storage_path": "x", "fetch_mode": "ftp"}, "attachments[0].fetch_mode"),
    ({"filename": "a", "storage_path": "x", "mime_type": "pdf"}, "attachments[0].mime_type"),
    ({"filename": "a", "storage_path": "x", "content_md5": "abc"}, "attachments[0].content_md5"),
    ({"filename": "a", "storage_path": "x", "content_id": "a b"}, "attachments[0].content_id"),
    ({"filename": "a", "storage_path": "x", "content_id": "cid@exämple.com"},
     "attachments[0].content_id"),
    ({"filename": "a", "storage_path": "x", "auth": {"method": "bearer"}},
     "attachments[0].auth.token"),
    ({"filename": "a", "storage_path": "ftp://h/x", "fetch_mode": "http_url"},
     "attachments[0].storage_path"),
    # credentials in the URL would be stored and shown in clear: they belong in 'auth'
    ({"filename": "a", "storage_path": "https://user:pw@files.example.com/x"},
     "attachments[0].storage_path"),
    ({"filename": "a", "storage_path": "https://token@files.example.com/x"},
     "attachments[0].storage_path"),
])
def test_schema_errors_name_the_field(item: dict, field: str) -> None:
    err = rejected([item])
    assert (err.rejection.code, err.rejection.field) == ("invalid_attachment", field)


def test_list_shape_and_count() -> None:
    assert norm(None) == []
    assert rejected({"filename": "a"}).rejection.field == "attachments"
    many = [{"filename": f"{i}.txt", "storage_path": "base64:"} for i in range(101)]
    assert rejected(many).rejection.code == "invalid_attachment"
    assert len(norm(many[:100])) == 100


def test_optional_fields_are_normalised() -> None:
    out = norm([{"filename": "r_{MD5:" + "A" * 32 + "}.pdf", "storage_path": "doc",
                 "content_md5": "B" * 32, "mime_type": "application/pdf", "content_id": "logo1",
                 "auth": {"method": "basic", "user": "u", "password": "p"}}])[0]
    assert out["content_md5"] == "b" * 32
    assert out["filename"] == "r_{MD5:" + "A" * 32 + "}.pdf"
    assert out["auth"] == {"method": "basic", "user": "u", "password": "p"}


@pytest.mark.parametrize(("auth", "field", "says"), [
    ({"method": "bearer", "token": "t" * 200_000}, "token", "at most 4096"),
    ({"method": "basic", "user": "u\x07ser", "password": "pw"}, "user", "control"),
    ({"method": "basic", "user": "user", "password": "p\nw"}, "password", "control"),
    ({"method": "basic", "user": "user", "password": "x" * 2000}, "password", "at most 1024"),
])
def test_attachment_auth_follows_the_client_auth_rules(auth: dict, field: str,
                                                       says: str) -> None:
    item = {"filename": "a.pdf", "storage_path": "https://files.acme.test/a.pdf", "auth": auth}
    rejection = rejected([item]).rejection
    assert rejection.field == f"attachments[0].auth.{field}" and says in rejection.reason
    secret = auth.get("token") or auth.get("password") or ""
    assert secret[:20] not in rejection.reason or field == "user"
