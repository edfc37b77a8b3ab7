"""Signed QR tokens: layout, keys, key rings, the opaque error and its diagnosis."""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import ordonum
import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from ordonum import (
    IdGenerator,
    InvalidId,
    InvalidToken,
    KeyRing,
    SigningKey,
    Token,
    VerifyingKey,
    diagnose_token,
    diagnose_token_at,
    issue_token,
    issue_token_at,
    issue_tokens,
    issue_tokens_at,
    parse_access_code,
    parse_id,
    qr,
    verify_token,
    verify_token_at,
    verify_tokens,
    verify_tokens_at,
)

MESSAGE = "invalid prescription token"
DOMAIN = b"ordonum/rx-token/v1\0"
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
NOW = datetime(2026, 5, 28, 12, 0, 0, tzinfo=UTC)
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
GEN = IdGenerator(77)


def b45encode(data: bytes) -> str:
    """RFC 9285, written from the RFC, independent of the Rust code."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        e, rest = divmod(n, 45 * 45)
        d, c = divmod(rest, 45)
        out += [B45[c], B45[d], B45[e]]
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += [B45[c], B45[d]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    out = bytearray()
    for i in range(0, len(text), 3):
        group = [B45.index(ch) for ch in text[i : i + 3]]
        n = sum(v * 45**k for k, v in enumerate(group))
        out += n.to_bytes(2 if len(group) == 3 else 1, "big")
    return bytes(out)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_bytes("FR01", bytes(range(32)))


@pytest.fixture(scope="module")
def ring(key: SigningKey) -> KeyRing:
    return KeyRing([key.verifying_key()])


def fresh(key: SigningKey, now: datetime = NOW) -> Token:
    return issue_token_at(key, GEN.new(), now)


def test_round_trip(key: SigningKey, ring: KeyRing) -> None:
    rx = GEN.new()
    t = issue_token(key, rx)
    v = verify_token(t.text, ring)
    assert v == t
    assert (v.id, v.kid, v.access_code, v.text) == (rx, "FR01", t.access_code, t.text)
    assert v.issued_at.tzinfo is not None
    assert v.issued_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - v.issued_at) < timedelta(seconds=5)
    assert parse_access_code(t.access_code.lower().replace("-", " ")) == t.access_code
    assert "access" not in repr(t)
    assert t.access_code not in repr(t)
    # Two tokens for the same ID carry different access codes.
    assert issue_token(key, rx).access_code != t.access_code


def test_layout_is_the_documented_one(key: SigningKey) -> None:
    rx = GEN.new()
    t = issue_token_at(key, rx, NOW)
    assert len(t.text) == ordonum._core.TOKEN_TEXT_LEN == 153
    assert t.text.startswith("RX1:")
    raw = b45decode(t.text[4:])
    assert len(raw) == 99
    assert b45encode(raw) == t.text[4:]
    version, id_bytes, code, kid, secs = struct.unpack(">B10s16s4sI", raw[:35])
    assert (version, id_bytes, kid) == (1, parse_id(rx).bytes, b"FR01")
    assert EPOCH + timedelta(seconds=secs) == NOW == t.issued_at
    # Access code bytes: the text form is their 128 bits in Crockford Base32.
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = int.from_bytes(code, "big")
    digits = "".join(crockford[(value >> (5 * (25 - i))) & 31] for i in range(26))
    assert t.access_code.replace("-", "") == digits
    # The signature is plain Ed25519 over DOMAIN + the first 35 bytes: `cryptography` agrees.
    pub = Ed25519PublicKey.from_public_bytes(key.verifying_key().to_bytes())
    pub.verify(raw[35:], DOMAIN + raw[:35])


def test_a_token_built_elsewhere_verifies(ring: KeyRing) -> None:
    # Build a token with `cryptography` and the RFC's Base45, from the documented layout only.
    sk = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    rx = parse_id(GEN.new())
    body = struct.pack(">B10s16s4sI", 1, rx.bytes, bytes(16), b"FR01", 200_000_000)
    text = "RX1:" + b45encode(body + sk.sign(DOMAIN + body))
    t = verify_token(text, ring)
    assert t.id == rx.text
    assert t.access_code == "0000-0000-0000-0000-0000-0000-00"
    assert t.issued_at == EPOCH + timedelta(seconds=200_000_000)
    # The same, over an ID whose check character ordonum never issues.
    unissued = next(
        b
        for n in range(1000)
        if not ordonum.is_valid_id(
            "".join(crockford_digits(b := (1 << 40 | n).to_bytes(10, "big")))
        )
    )
    body = struct.pack(">B10s16s4sI", 1, unissued, bytes(16), b"FR01", 200_000_000)
    bad = "RX1:" + b45encode(body + sk.sign(DOMAIN + body))
    with pytest.raises(InvalidToken):
        verify_token(bad, ring)
    assert diagnose_token(bad, ring) == "bad ID check character"


def crockford_digits(b: bytes) -> list[str]:
    """Body + ISO 7064 MOD 37-2 check, as id.rs documents it, for 10 ID bytes."""
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    iso = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
    v = int.from_bytes(b, "big")
    body = [crockford[(v >> (5 * (15 - i))) & 31] for i in range(16)]
    s = 0
    for ch in body:
        s = (2 * s + iso.index(ch)) % 37
    return [*body, iso[(1 - 2 * s) % 37]]


def test_fits_a_version_7_qr_code_at_level_m(key: SigningKey) -> None:
    for _ in range(20):
        text = fresh(key).text
        m = qr.matrix(text, "M")
        assert m.version <= 7
        assert m.version == segno.make_qr(text, error="m", boost_error=False).version == 6


def test_every_failure_is_the_same_opaque_error(key: SigningKey) -> None:
    other = SigningKey.from_bytes("FR01", bytes(32))
    second = SigningKey.from_bytes("FR02", bytes([7]) * 32)
    ring = KeyRing([key.verifying_key(), second.verifying_key()], max_age=3600)
    good = fresh(key)
    revoked = fresh(second)
    ring.revoke("FR02")
    raw = bytearray(b45decode(good.text[4:]))
    raw[0] = 2
    v2 = "RX1:" + b45encode(bytes(raw))
    cases = {
        "bad prefix": ("RX2:" + good.text[4:], 'bad prefix: a token starts with "RX1:"'),
        "lowercase": (
            "RX1:" + good.text[4:].lower(),
            "bad Base45: invalid Base45 character",
        ),
        "length": (good.text[:-2], "wrong length: 98 bytes, a token has 99"),
        "version": (v2, "unknown token version 2"),
        "unknown kid": (fresh(SigningKey.generate("XY12")).text, "unknown kid XY12"),
        "revoked kid": (revoked.text, "revoked kid FR02"),
        "signature": (fresh(other).text, "bad signature"),
        "too old": (
            fresh(key, NOW - timedelta(hours=2)).text,
            "too old: issued 7200 s ago, maximum age 3600 s",
        ),
        "future": (
            fresh(key, NOW + timedelta(hours=1)).text,
            "issued 3600 s in the future (clock skew?)",
        ),
        "empty": ("", "bad prefix"),
    }
    for name, (text, reason) in cases.items():
        with pytest.raises(InvalidToken) as e:
            verify_token_at(text, ring, NOW)
        assert str(e.value) == MESSAGE, name
        assert e.value.args == (MESSAGE,), name
        assert isinstance(e.value, ValueError)
        assert diagnose_token_at(text, ring, NOW).startswith(reason), name
    assert diagnose_token_at(good.text, ring, NOW) == "ok"
    assert verify_tokens_at([c for c, _ in cases.values()], ring, NOW) == [None] * len(cases)


def test_max_age_and_the_injected_clock(key: SigningKey) -> None:
    ring = KeyRing([key.verifying_key()], max_age=600)
    assert ring.max_age == 600.0
    t = fresh(key)
    assert verify_token_at(t.text, ring, NOW + timedelta(seconds=600)) == t
    with pytest.raises(InvalidToken):
        verify_token_at(t.text, ring, NOW + timedelta(seconds=601))
    # Any time zone: the instant counts.
    paris = timezone(timedelta(hours=2))
    assert verify_token_at(t.text, ring, (NOW + timedelta(seconds=599)).astimezone(paris)) == t
    # Tokens issued in 2026 are too old now: the real clock is used without *_at.
    with pytest.raises(InvalidToken):
        verify_token(fresh(key, datetime(2021, 1, 1, tzinfo=UTC)).text, ring)
    ring.max_age = None
    assert verify_token(fresh(key, datetime(2021, 1, 1, tzinfo=UTC)).text, ring)
    with pytest.raises(ValueError, match="max_age must be a positive number of seconds"):
        KeyRing(max_age=0)
    with pytest.raises(ValueError, match="aware datetime"):
        verify_token_at(t.text, ring, datetime(2026, 5, 28))
    with pytest.raises(TypeError, match="now must be a datetime, not int"):
        issue_token_at(key, GEN.new(), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="issue time outside"):
        issue_token_at(key, GEN.new(), datetime(2019, 12, 31, tzinfo=UTC))


def test_pem_interoperates_with_cryptography() -> None:
    # cryptography -> ordonum
    theirs = Ed25519PrivateKey.generate()
    pem = theirs.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ours = SigningKey.from_pem("FR01", pem)
    assert ours.to_bytes() == theirs.private_bytes_raw()
    pub_pem = theirs.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert VerifyingKey.from_pem("FR01", pub_pem.decode()) == ours.verifying_key()
    assert ours.verifying_key().to_pem().encode() == pub_pem
    assert ours.sign(b"hello") == theirs.sign(b"hello")
    # ordonum -> cryptography
    mine = SigningKey.generate("FR03")
    loaded = serialization.load_pem_private_key(mine.to_pem().encode(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert loaded.private_bytes_raw() == mine.to_bytes()
    assert mine.to_pem().encode() == loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = serialization.load_pem_public_key(mine.verifying_key().to_pem().encode())
    assert isinstance(pub, Ed25519PublicKey)
    pub.verify(mine.sign(b"ack"), b"ack")
    vk = mine.verifying_key()
    assert vk.verify(mine.sign(b"ack"), b"ack")
    assert not vk.verify(mine.sign(b"ack"), b"ack!")
    assert not vk.verify(b"short", b"ack")
    assert VerifyingKey.from_bytes("FR03", vk.to_bytes()) == vk


def test_key_errors_say_what_is_wrong() -> None:
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: SigningKey.generate("fr01"), ValueError, "a kid is exactly 4 characters"),
        (lambda: SigningKey.generate("FR001"), ValueError, 'got "FR001"'),
        (lambda: SigningKey.from_bytes("FR01", b"x" * 31), ValueError, "32 bytes, got 31"),
        (lambda: VerifyingKey.from_bytes("FR01", b"x" * 33), ValueError, "32 bytes, got 33"),
        (
            lambda: VerifyingKey.from_bytes("FR01", b"\x01" + bytes(31)),
            ValueError,
            "not a usable Ed25519 public key",
        ),
        (lambda: SigningKey.from_pem("FR01", "junk"), ValueError, "cannot read the PEM key"),
        (lambda: SigningKey.generate(1), TypeError, "kid must be str, not int"),  # type: ignore[arg-type]
        (lambda: SigningKey.from_pem("FR01", 1), TypeError, "pem must be str or bytes"),  # type: ignore[arg-type]
        (lambda: KeyRing([1]), TypeError, "KeyRing takes VerifyingKey objects"),  # type: ignore[list-item]
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()


def test_rotation_and_revocation() -> None:
    old, new = SigningKey.generate("FR01"), SigningKey.generate("FR02")
    ring = KeyRing([old.verifying_key()])
    t_old = fresh(old)
    ring.add(new.verifying_key())
    ring.add(new.verifying_key())  # idempotent
    assert ring.kids == ["FR01", "FR02"]
    t_new = fresh(new)
    assert verify_tokens([t_old.text, t_new.text], ring) == [t_old, t_new]
    ring.revoke("FR01")
    assert ring.kids == ["FR02"]
    assert ring.revoked == ["FR01"]
    assert verify_tokens([t_old.text, t_new.text], ring) == [None, t_new]
    assert diagnose_token(t_old.text, ring) == "revoked kid FR01"
    with pytest.raises(ValueError, match="kid FR01 is revoked and cannot be used again"):
        ring.add(SigningKey.generate("FR01").verifying_key())
    with pytest.raises(ValueError, match="kid FR02 is already in the ring with another key"):
        ring.add(SigningKey.generate("FR02").verifying_key())
    ring.revoke("ZZ99")  # revoking ahead of time is allowed
    assert ring.revoked == ["FR01", "ZZ99"]


def test_verify_tokens_matches_verify_token(key: SigningKey, ring: KeyRing) -> None:
    texts = [fresh(key).text for _ in range(300)]
    forged = fresh(SigningKey.generate("FR01")).text
    texts[5], texts[200] = forged, texts[200][:-1]
    got = verify_tokens(texts, ring)
    assert len(got) == 300
    for text, g in zip(texts, got, strict=True):
        want = diagnose_token(text, ring) == "ok"
        assert (g is not None) == want
        if g is not None:
            assert g.text == text
    assert got[5] is None
    assert got[200] is None
    assert verify_tokens([], ring) == []
    assert verify_tokens(iter(texts[:3]), ring) == got[:3]
    with pytest.raises(TypeError, match="token must be str, not bytes"):
        verify_tokens([b"RX1:"], ring)  # type: ignore[list-item]


def test_issue_tokens_signs_each_id_in_order(key: SigningKey, ring: KeyRing) -> None:
    # 700 is enough to be split over several threads (256 per thread at least).
    ids = GEN.new_batch(700)
    tokens = issue_tokens_at(key, ids, NOW)
    assert [t.id for t in tokens] == ids
    assert all(t.issued_at == NOW and t.kid == "FR01" for t in tokens)
    assert len({t.access_code for t in tokens}) == 700
    pub = Ed25519PublicKey.from_public_bytes(key.verifying_key().to_bytes())
    for t in tokens:
        # Each one verifies on its own, and with `cryptography` over the documented layout.
        assert verify_token_at(t.text, ring, NOW) == t
        raw = b45decode(t.text[4:])
        pub.verify(raw[35:], DOMAIN + raw[:35])
    assert verify_tokens_at([t.text for t in tokens], ring, NOW) == tokens
    fresh_now = issue_tokens(key, iter(ids[:3]))
    assert [verify_token(t.text, ring).id for t in fresh_now] == ids[:3]
    assert issue_tokens(key, []) == []


def test_issue_tokens_refuses_bad_input_whole(key: SigningKey) -> None:
    ids = GEN.new_batch(3)
    with pytest.raises(InvalidId, match=r"^rx_ids\[1\]: an ID has 17 characters"):
        issue_tokens(key, [ids[0], "nope", ids[2]])
    with pytest.raises(TypeError, match=r"^rx_ids\[2\] must be str, not bytes$"):
        issue_tokens(key, [ids[0], ids[1], b"x"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        issue_tokens(key, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        issue_tokens("FR01", ids)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    key = SigningKey.generate("FR01")
    with pytest.raises(InvalidId):
        issue_token(key, "not an id")
    with pytest.raises(TypeError, match="token must be str, not NoneType"):
        verify_token(None, KeyRing())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="an access code has 26 characters"):
        parse_access_code("1234")
    with pytest.raises(ValueError, match="invalid character 'U' at position 2"):
        parse_access_code("0U" + "0" * 24)


# --- forgery: any mutation of a valid token is refused --------------------------------

KEY = SigningKey.from_bytes("FR01", bytes(range(32)))
OTHER = SigningKey.from_bytes("FR01", bytes(range(1, 33)))
REVOKED = SigningKey.from_bytes("FR09", bytes(range(2, 34)))
RING = KeyRing([KEY.verifying_key(), REVOKED.verifying_key()])
RING.revoke("FR09")
ALPHABET = B45 + "abcxyz!_é\0"


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    text = issue_token_at(KEY, GEN.new(), NOW).text
    kind = draw(
        st.sampled_from(
            ["change", "drop", "add", "truncate", "lowercase", "other key", "revoked kid"]
        )
    )
    i = draw(st.integers(0, len(text) - 1))
    if kind == "change":
        ch = draw(st.sampled_from(ALPHABET).filter(lambda c: c != text[i]))
        return kind, text[:i] + ch + text[i + 1 :]
    if kind == "drop":
        return kind, text[:i] + text[i + 1 :]
    if kind == "add":
        return kind, text[:i] + draw(st.sampled_from(ALPHABET)) + text[i:]
    if kind == "truncate":
        return kind, text[:i]
    if kind == "lowercase":
        j = draw(st.integers(i + 1, len(text)))
        mutated = text[:i] + text[i:j].lower() + text[j:]
        # Digits and symbols have no lower case: make sure something changed.
        return kind, mutated if mutated != text else text.lower()
    if kind == "other key":
        return kind, issue_token_at(OTHER, GEN.new(), NOW).text
    return kind, issue_token_at(REVOKED, GEN.new(), NOW).text


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_any_mutation_is_refused(case: tuple[str, str]) -> None:
    kind, text = case
    with pytest.raises(InvalidToken, match=f"^{MESSAGE}$"):
        verify_token_at(text, RING, NOW)
    assert diagnose_token_at(text, RING, NOW) != "ok", kind
    assert verify_tokens_at([text, text], RING, NOW) == [None, None]
