"""Text settings end up in Message-IDs, SMTP commands, IMAP commands and links: a final
newline (which Python's ``$`` lets through) or any other control character is refused."""

from __future__ import annotations

import pytest

from mail_proxy.errors import ValidationFailed
from mail_proxy.settings import normalise_setting, validate_changes

GOOD = {"message_id_domain": "mail.acme.test", "bounce_imap_host": "imap.acme.test",
        "bounce_return_path": "bounces@acme.test",
        "public_base_url": "https://files.acme.test/dl", "bounce_imap_folder": "INBOX"}


@pytest.mark.parametrize("name", sorted(GOOD))
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00", "\x1b[31m"])
def test_control_characters_are_refused(name: str, suffix: str) -> None:
    assert normalise_setting(name, GOOD[name]) == GOOD[name]
    with pytest.raises(Exception, match="control characters"):
        normalise_setting(name, GOOD[name] + suffix)


def test_a_patch_names_the_setting() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_changes({}, {"bounce_return_path": "b@acme.test\n"})
    assert [f.field for f in caught.value.fields] == ["bounce_return_path"]


@pytest.mark.parametrize(("item", "shown"), [(True, "true"), (None, "null"), (5, "5"),
                                             ("rel/dir", '"rel/dir"')])
def test_a_bad_attachment_root_is_quoted_as_json(item: object, shown: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_changes({}, {"attachment_roots": ["/ok", item]})
    [problem] = caught.value.fields
    assert problem.field == "attachment_roots"
    assert problem.message == f"{shown} is not an absolute path"


@pytest.mark.parametrize("url", ["http://u:Secret1@files.acme.test/dl", "https://u@files.acme.test"])
def test_public_base_url_refuses_credentials(url: str) -> None:
    """Download links are built on it and go into e-mails: credentials in it would reach
    every recipient (and were shown by GET /instance and config show)."""
    with pytest.raises(ValidationFailed) as caught:
        validate_changes({}, {"public_base_url": url})
    [problem] = caught.value.fields
    assert "user name or password" in problem.message and "Secret1" not in problem.message
    assert validate_changes({}, {"public_base_url": "https://files.acme.test/a@b"})


@pytest.mark.parametrize("url", ["https://files.acme.test/dl?x=1", "https://files.acme.test/#f"])
def test_base_urls_refuse_a_query_or_fragment(url: str) -> None:
    """Reports hunt: paths are appended to a base URL; "…/base#frag" sent reports to /base
    and "…/base?x=1" to "/base?x=1/hooks/sync"."""
    from mail_proxy.manager.fields import Bad, http_url

    with pytest.raises(ValidationFailed) as caught:
        validate_changes({}, {"public_base_url": url})
    assert "query" in caught.value.fields[0].message
    with pytest.raises(Bad):
        http_url(url)  # client_base_url's check
