"""What the command log keeps of a request or answer (api.md §8): secrets are masked even
when a client names them unexpectedly (security hunt, 2026-11-25)."""

from __future__ import annotations

import pytest

from mail_proxy.manager.command_log import MASK, clean


def test_known_secret_keys_are_masked_and_flags_kept() -> None:
    body = {"password": "pw", "signing_secret": "s", "has_password": True, "token": None}
    assert clean(body) == {"password": MASK, "signing_secret": MASK, "has_password": True,
                           "token": None}


def test_misspelt_or_unknown_secret_names_are_masked() -> None:
    assert clean({"passwd": "x", "smtp_token": "y", "client_secret_2": "z"}) == {
        "passwd": MASK, "smtp_token": MASK, "client_secret_2": MASK}


def test_credential_objects_keep_only_method_and_user() -> None:
    auth = {"method": "basic", "user": "app", "password": "pw", "extra": "leak"}
    assert clean({"client_auth": auth}) == {
        "client_auth": {"method": "basic", "user": "app", "password": MASK, "extra": MASK}}
    # a refused request may carry the credential as a bare string
    assert clean({"attachments": [{"auth": "SECRETzz19"}]}) == {
        "attachments": [{"auth": MASK}]}
    assert clean({"auth": None}) == {"auth": None}


def test_url_passwords_are_masked_wherever_they_appear() -> None:
    body = {"attachments": [{"storage_path": "https://user:SECRET16@h.test/x?a=b"}],
            "note": "see http://u:p@host.test and ftp://x@host.test"}
    cleaned = clean(body)
    assert cleaned["attachments"][0]["storage_path"] == f"https://user:{MASK}@h.test/x?a=b"
    assert cleaned["note"] == f"see http://u:{MASK}@host.test and ftp://x@host.test"
    assert "SECRET16" not in str(cleaned)


def test_credential_flags_inside_auth_objects_stay() -> None:
    auth = {"method": "bearer", "has_token": True, "token": "t0k3n"}
    assert clean({"client_auth": auth}) == {
        "client_auth": {"method": "bearer", "has_token": True, "token": MASK}}


def test_presigned_link_signatures_are_masked() -> None:
    """Presigned links carry their credential in the query string (isolation hunt)."""
    url = ("https://bucket.s3.amazonaws.com/r.pdf?X-Amz-Credential=AKIAEXAMPLE%2F20261125"
           "&X-Amz-Date=20261125T000000Z&X-Amz-Signature=deadbeef&sig=AZURE&token=QS"
           "&api_key=K1&page=2#frag")
    cleaned = clean({"attachments": [{"storage_path": url}]})["attachments"][0]["storage_path"]
    assert cleaned == ("https://bucket.s3.amazonaws.com/r.pdf?X-Amz-Credential=***"
                       "&X-Amz-Date=20261125T000000Z&X-Amz-Signature=***&sig=***&token=***"
                       "&api_key=***&page=2#frag")
    assert clean("see https://h.test/x?q=1&Signature=abc") == (
        "see https://h.test/x?q=1&Signature=***")


@pytest.mark.parametrize(("value", "masked"), [
    ("https://h.test/x?X-Amz-%53ignature=abc&page=2", "https://h.test/x?X-Amz-%53ignature=***&page=2"),
    ("https://h.test/cb?code=123&state=ok", "https://h.test/cb?code=***&state=ok"),
    ("https://h.test/x#token=T&a=1", "https://h.test/x#token=***&a=1"),
    ("https://h.test/x?sig=AZ8;token=SEMI9", "https://h.test/x?sig=***;token=***"),
    ("[https://h.test/x?token=T]p=1", "[https://h.test/x?token=***]p=1"),
    ("/mail-proxy/sync?api_key=SYNC21", "/mail-proxy/sync?api_key=***"),
    ("/mail-proxy/sync", "/mail-proxy/sync"),
], ids=["percent-encoded-name", "oauth-code", "fragment", "semicolons", "endpoint-form",
        "path-with-query", "plain-path"])
def test_credential_parameters_are_masked_in_every_form(value: str, masked: str) -> None:
    """Gaps the verification pass found in the first version of the masking."""
    assert clean({"client_sync_path": value}) == {"client_sync_path": masked}
