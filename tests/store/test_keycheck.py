"""The start-up key check finds key ids that the ring lacks, on both backends."""

from __future__ import annotations

from mail_proxy.security.crypto import KeyRing, generate_key
from mail_proxy.store.keycheck import kids_in, missing_kids, refusal_message
from tests.support import factories as f


def test_kids_are_read_from_values_and_payloads() -> None:
    payload = '{"a": "ENC:v1:0a1b2c3d:QUJD", "b": "ENC:v1:deadbeef:REVG", "c": "ENC:xyz"}'
    assert kids_in([payload, None, 5, "plain"]) == {"0a1b2c3d", "deadbeef"}


async def test_missing_kids_names_the_keys_the_ring_lacks(core, keyring: KeyRing) -> None:
    await f.tenant(core, signing_secret="s" * 32)
    await f.account(core, 2525, user="u", password="p")
    assert await missing_kids(core.store, keyring) == set()
    other = KeyRing([generate_key()], source="env")
    assert await missing_kids(core.store, other) == {keyring.primary_kid}
    # Once the old key is copied into the ring next to the new primary, the check passes.
    merged = KeyRing([*other.keys(), *keyring.keys()], source="env")
    assert await missing_kids(core.store, merged) == set()
    text = refusal_message({keyring.primary_kid}, "main")
    assert keyring.primary_kid in text and "encryption.key" in text
    assert "into this instance's encryption.key" in text
    creating = refusal_message({keyring.primary_kid}, "main", creating=True)
    assert "--key-file PATH" in creating and "into this instance's" not in creating


async def test_the_first_opening_generates_the_instance_secret(core, keyring: KeyRing) -> None:
    """data.md §2.7 (PostgreSQL hunt): it stayed null, so a fresh shared database held no
    secret and a second instance with a key of its own was accepted."""
    import base64

    row = await core.store.fetch_one("instance_get")
    secret = keyring.decrypt(row["instance_secret"])
    assert len(base64.b64decode(secret)) == 32
    # an empty database already marks the ring that opened it first
    other = KeyRing([generate_key()], source="env")
    assert await missing_kids(core.store, other) == {keyring.primary_kid}
    # and a later opening keeps it
    await core._init_instance_secret(await core.store.fetch_one("instance_get"))
    assert (await core.store.fetch_one("instance_get"))["instance_secret"] == \
        row["instance_secret"]
