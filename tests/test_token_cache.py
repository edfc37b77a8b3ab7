"""TokenCache: remembered acceptances stay as strict as a full check."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from ordonum import (
    IdGenerator,
    InvalidToken,
    KeyRing,
    SigningKey,
    TokenCache,
    issue_token,
    issue_token_at,
    verify_token,
    verify_token_at,
)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("TV01")


@pytest.fixture
def ring(key: SigningKey) -> KeyRing:
    return KeyRing([key.verifying_key()])


def test_an_accepted_text_is_not_checked_again(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring)
    token = issue_token(key, IdGenerator(3).new())
    assert cache.verify(token.text) == token
    assert cache.verify(token.text) == token
    assert cache.verify(token.text) == verify_token(token.text, ring)
    assert (cache.checks, cache.hits, len(cache)) == (1, 2, 1)
    assert cache.keyring is ring
    assert repr(cache) == "TokenCache(size=100000, len=1, hits=2, checks=1)"


def test_a_refused_text_is_not_remembered(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring)
    text = issue_token(key, IdGenerator(3).new()).text
    forged = text[:-2] + ("AA" if text[-2:] != "AA" else "BB")
    for _ in range(2):
        with pytest.raises(InvalidToken, match=r"^invalid prescription token$"):
            cache.verify(forged)
    other = SigningKey.generate("TV02")  # not in the ring
    with pytest.raises(InvalidToken):
        cache.verify(issue_token(other, IdGenerator(3).new()).text)
    assert (cache.checks, cache.hits, len(cache)) == (0, 0, 0)


def test_revocation_applies_to_remembered_tokens(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring)
    token = issue_token(key, IdGenerator(3).new())
    cache.verify(token.text)
    ring.revoke("TV01")
    with pytest.raises(InvalidToken, match="invalid prescription token"):
        cache.verify(token.text)
    assert len(cache) == 0


def test_max_age_applies_to_remembered_tokens(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring)
    issued = datetime.now(UTC) - timedelta(minutes=10)
    token = issue_token_at(key, IdGenerator(3).new(), issued)
    assert cache.verify(token.text) == token  # no limit yet
    ring.max_age = 3600
    assert cache.verify(token.text) == token
    ring.max_age = 60
    with pytest.raises(InvalidToken):
        cache.verify(token.text)
    assert len(cache) == 0


def test_verify_at_decides_as_verify_token_at(key: SigningKey, ring: KeyRing) -> None:
    ring.max_age = 3600
    issued = datetime(2026, 5, 1, 12, tzinfo=UTC)
    token = issue_token_at(key, IdGenerator(3).new(), issued)
    cache = TokenCache(ring)
    for now in (
        issued,
        issued + timedelta(minutes=30),  # from memory
        issued + timedelta(hours=2),  # too old now
        issued,  # checked in full again
        issued - timedelta(hours=1),  # in the future
    ):
        try:
            expected = verify_token_at(token.text, ring, now)
        except InvalidToken:
            with pytest.raises(InvalidToken):
                cache.verify_at(token.text, now)
        else:
            assert cache.verify_at(token.text, now) == expected
    assert (cache.checks, cache.hits) == (2, 1)


def test_the_first_remembered_is_forgotten_first(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring, size=2)
    gen = IdGenerator(3)
    a, b, c = (issue_token(key, gen.new()).text for _ in range(3))
    # a hit does not renew: a goes when c comes (least-recently-used would keep it: 3, 2)
    for text in (a, b, a, c, a):
        cache.verify(text)
    assert (cache.checks, cache.hits, len(cache), cache.size) == (4, 1, 2, 2)


def test_bad_arguments(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        TokenCache(ring, size=0)
    with pytest.raises(OverflowError):
        TokenCache(ring, size=-1)
    with pytest.raises(TypeError):
        TokenCache("not a ring")  # type: ignore[arg-type]
    cache = TokenCache(ring)
    with pytest.raises(TypeError, match="token must be str"):
        cache.verify(b"RX1:")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="now must be a datetime"):
        cache.verify_at("RX1:", 0)  # type: ignore[arg-type]


def test_threads_share_one_cache(key: SigningKey, ring: KeyRing) -> None:
    cache = TokenCache(ring, size=50)
    gen = IdGenerator(3)
    tokens = [issue_token(key, gen.new()) for _ in range(80)]
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            for i in range(400):
                t = tokens[(i + offset) % len(tokens)]
                assert cache.verify(t.text) == t
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n * 7,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.hits + cache.checks == 4 * 400
    assert len(cache) <= 50
