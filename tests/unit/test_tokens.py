"""API tokens: shape, hashing, comparison, masking, the Secret wrapper."""

from __future__ import annotations

import hashlib
import logging
import pickle
import re

import pytest

from mail_proxy.security.tokens import Secret, generate_token, hash_api_key, mask, tokens_equal


def test_generate_token_shape() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_hash_api_key() -> None:
    assert hash_api_key("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(hash_api_key(generate_token())) == 64


def test_tokens_equal() -> None:
    token = generate_token()
    assert tokens_equal(token, token[:])
    assert not tokens_equal(token, token[:-1])
    assert not tokens_equal(token, generate_token())
    assert tokens_equal("clé-ü", "clé-ü")  # non-ASCII would make compare_digest on str raise
    assert not tokens_equal("clé-ü", "cle-u")


def test_mask_never_shows_the_whole_secret() -> None:
    token = generate_token()
    assert mask(token) == f"{token[:4]}…(43 chars)"
    assert mask("short-pass") == "…(10 chars)"
    assert mask(None) == "(not set)" and mask("") == "(empty)"
    for secret in ("Q", "QQQQ", "Q" * 15, "Q" * 16, token):
        assert secret not in mask(secret)


def test_secret_hides_its_value(caplog: pytest.LogCaptureFixture) -> None:
    token = generate_token()
    secret = Secret(token)
    assert secret.reveal() == token
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert token not in shown
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("token is %s (%r)", secret, secret)
    assert token not in caplog.text and "(43 chars)" in caplog.text
    assert Secret(token) == secret and Secret(secret).reveal() == token
    assert secret != token  # no accidental comparison with a plain str
    assert bool(Secret("")) is False
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]
