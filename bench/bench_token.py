"""Tokens: issue and verify against PyNaCl and cryptography's raw Ed25519.

Per-token numbers for the batch: the benchmark runs verify_tokens on BATCH tokens, and
bench/report.py divides by `extra_info["per_call"]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ordonum import (
    IdGenerator,
    KeyRing,
    SigningKey,
    TokenCache,
    issue_token,
    verify_token,
    verify_tokens,
)
from pytest_benchmark.fixture import BenchmarkFixture

DOMAIN = b"ordonum/rx-token/v1\0"
KEY = SigningKey.generate("FR01")
RING = KeyRing([KEY.verifying_key()])
GEN = IdGenerator(9)
# What a token signs: DOMAIN + 35 bytes.
MESSAGE = DOMAIN + bytes(35)


def batch_size(benchmark: BenchmarkFixture) -> int:
    return 8 if benchmark.disabled else 256


@pytest.mark.benchmark(group="token-issue")
def test_issue_token_ordonum(benchmark: BenchmarkFixture) -> None:
    rx = GEN.new()
    t = benchmark(issue_token, KEY, rx)
    assert t.id == rx


@pytest.mark.benchmark(group="token-issue")
def test_sign_pynacl(benchmark: BenchmarkFixture) -> None:
    sk = nacl.signing.SigningKey(KEY.to_bytes())
    assert benchmark(sk.sign, MESSAGE).signature == KEY.sign(MESSAGE)


@pytest.mark.benchmark(group="token-issue")
def test_sign_cryptography(benchmark: BenchmarkFixture) -> None:
    sk = Ed25519PrivateKey.from_private_bytes(KEY.to_bytes())
    assert benchmark(sk.sign, MESSAGE) == KEY.sign(MESSAGE)


@pytest.mark.benchmark(group="token-verify")
def test_verify_token_ordonum(benchmark: BenchmarkFixture) -> None:
    text = issue_token(KEY, GEN.new()).text
    assert benchmark(verify_token, text, RING).text == text


@pytest.mark.benchmark(group="token-verify")
def test_verify_tokens_per_token_ordonum_batch(benchmark: BenchmarkFixture) -> None:
    n = batch_size(benchmark)
    texts = [issue_token(KEY, GEN.new()).text for _ in range(n)]
    benchmark.extra_info["per_call"] = n
    out = benchmark(verify_tokens, texts, RING)
    assert all(t is not None for t in out)


@pytest.mark.benchmark(group="token-verify-remembered")
def test_verify_token_ordonum_remembered(benchmark: BenchmarkFixture) -> None:
    """A text seen before (the dispensations of a visit resend the scanned token): what a
    TokenCache decides without the signature check. The peer is a Python dict of the tokens
    verify_token accepted, with the same kid and age checks (service code before this
    cache)."""
    text = issue_token(KEY, GEN.new()).text
    cache = TokenCache(RING)
    cache.verify(text)
    assert benchmark(cache.verify, text).text == text
    assert cache.checks == 1


@pytest.mark.benchmark(group="token-verify-remembered")
def test_verify_token_python_dict_remembered(benchmark: BenchmarkFixture) -> None:
    text = issue_token(KEY, GEN.new()).text
    token = verify_token(text, RING)
    accepted = {text: (token, token.issued_at.timestamp())}

    def remembered(t: str) -> object:
        tok, issued = accepted[t]
        max_age = RING.max_age
        if tok.kid in RING.kids and (max_age is None or time.time() - issued <= max_age):
            return tok
        raise AssertionError("refused")

    assert benchmark(remembered, text) is token


@pytest.mark.benchmark(group="token-verify")
def test_verify_pynacl(benchmark: BenchmarkFixture) -> None:
    vk = nacl.signing.VerifyKey(KEY.verifying_key().to_bytes())
    sig = KEY.sign(MESSAGE)
    assert benchmark(vk.verify, MESSAGE, sig) == MESSAGE


@pytest.mark.benchmark(group="token-verify")
def test_verify_cryptography(benchmark: BenchmarkFixture) -> None:
    pk = Ed25519PrivateKey.from_private_bytes(KEY.to_bytes()).public_key()
    sig = KEY.sign(MESSAGE)
    verify: Callable[[bytes, bytes], None] = pk.verify
    benchmark(verify, sig, MESSAGE)
