"""The service checks QR tokens through one ordonum.TokenCache per key ring."""

from __future__ import annotations

from ordonum import IdGenerator, KeyRing, SigningKey, issue_token
from ordonum.service.keys import QrKeys


def test_the_service_checks_qr_tokens_through_one_cache() -> None:
    key = SigningKey.generate("TV01")
    ring = KeyRing([key.verifying_key()])
    qr = QrKeys(signing=key, keyring=ring)
    token = issue_token(key, IdGenerator(3).new())
    assert qr.verify(token.text) == token
    assert qr.verify(token.text) == token
    assert (qr.tokens.checks, qr.tokens.hits) == (1, 1)
    assert qr.tokens.keyring is ring
