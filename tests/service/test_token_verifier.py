"""TokenVerifier: remembered acceptances stay as strict as a full check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ordonum import IdGenerator, InvalidToken, KeyRing, SigningKey, issue_token, issue_token_at
from ordonum.service import keys
from ordonum.service.keys import TokenVerifier


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("TV01")


@pytest.fixture
def ring(key: SigningKey) -> KeyRing:
    return KeyRing([key.verifying_key()])


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts whose signature was really checked."""
    seen: list[str] = []
    real = keys.verify_token

    def counting(text: str, ring: KeyRing) -> Any:
        seen.append(text)
        return real(text, ring)

    monkeypatch.setattr(keys, "verify_token", counting)
    return seen


def test_an_accepted_text_is_not_checked_again(
    key: SigningKey, ring: KeyRing, checks: list[str]
) -> None:
    verify = TokenVerifier(ring)
    token = issue_token(key, IdGenerator(3).new())
    assert verify(token.text) == token
    assert verify(token.text) == token
    assert checks == [token.text]
    assert len(verify) == 1


def test_a_refused_text_is_not_remembered(
    key: SigningKey, ring: KeyRing, checks: list[str]
) -> None:
    verify = TokenVerifier(ring)
    text = issue_token(key, IdGenerator(3).new()).text
    forged = text[:-2] + ("AA" if text[-2:] != "AA" else "BB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verify(forged)
    assert checks == [forged, forged]
    assert len(verify) == 0


def test_revocation_applies_to_remembered_tokens(key: SigningKey, ring: KeyRing) -> None:
    verify = TokenVerifier(ring)
    token = issue_token(key, IdGenerator(3).new())
    verify(token.text)
    ring.revoke("TV01")
    with pytest.raises(InvalidToken, match="invalid prescription token"):
        verify(token.text)
    assert len(verify) == 0


def test_max_age_applies_to_remembered_tokens(key: SigningKey, ring: KeyRing) -> None:
    verify = TokenVerifier(ring)
    issued = datetime.now(UTC) - timedelta(minutes=10)
    token = issue_token_at(key, IdGenerator(3).new(), issued)
    assert verify(token.text) == token  # no limit yet
    ring.max_age = 3600
    assert verify(token.text) == token
    ring.max_age = 60
    with pytest.raises(InvalidToken):
        verify(token.text)


def test_the_oldest_is_forgotten_first(key: SigningKey, ring: KeyRing, checks: list[str]) -> None:
    verify = TokenVerifier(ring, size=2)
    gen = IdGenerator(3)
    a, b, c = (issue_token(key, gen.new()).text for _ in range(3))
    for text in (a, b, c, c, b, a):
        verify(text)
    assert checks == [a, b, c, a]
    assert len(verify) == 2


def test_size_must_be_positive(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        TokenVerifier(ring, size=0)
