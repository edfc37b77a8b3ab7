"""The acknowledgement (accusé de réception) returned when a prescription is created.

    canonical = JSON of the content, keys sorted, no whitespace, UTF-8 (orjson, OPT_SORT_KEYS:
                for this content, strings, integers and booleans only, that is the RFC 8785
                canonical form)
    content   = {"id", "created_at_ms", "prescriber_rpps", "patient": {"nir", "name",
                 "birth_date"}, "lines": [{"label", "cip13", "dosage", "quantity",
                 "renewals", "substitutable"}], "valid_until_ms"}
                (what the prescriber sent, normalised, plus the ID and reception time; the
                patient's consent is not content: it can change)
    digest    = SHA-256(canonical), lowercase hex (64 characters)
    message   = b"ordonum/ack/v1\\0" + ID text (ASCII) + b"\\0" + the 32 digest bytes
    signature = Ed25519(message) by the QR signing key, base64url without padding
    kid       = that key's kid; its public key is in DATA/keys/qr-signing-KID.pem

The domain prefix differs from the token's (``ordonum/rx-token/v1``), so an acknowledgement
signature can never pass as a token and the reverse.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from ordonum import SigningKey, VerifyingKey

__all__ = ["DOMAIN", "acknowledge", "canonical", "verify_acknowledgement"]

DOMAIN = b"ordonum/ack/v1\0"


def canonical(content: dict[str, Any]) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def _message(rx_id: str, digest: bytes) -> bytes:
    return DOMAIN + rx_id.encode("ascii") + b"\0" + digest


def acknowledge(key: SigningKey, content: dict[str, Any]) -> dict[str, str]:
    """``{"received_at", "digest", "signature", "kid"}`` for ``content`` (see module doc)."""
    digest = hashlib.sha256(canonical(content)).digest()
    signature = key.sign(_message(content["id"], digest))
    received = datetime.fromtimestamp(content["created_at_ms"] / 1000, tz=UTC)
    return {
        "received_at": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "digest": digest.hex(),
        "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
        "kid": key.kid,
    }


def verify_acknowledgement(
    key: VerifyingKey, content: dict[str, Any], acknowledgement: dict[str, str]
) -> bool:
    """Whether ``acknowledgement`` is the service's, for exactly ``content``."""
    digest = hashlib.sha256(canonical(content)).digest()
    if acknowledgement.get("digest") != digest.hex() or acknowledgement.get("kid") != key.kid:
        return False
    text = acknowledgement.get("signature", "")
    try:
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return False
    return key.verify(signature, _message(content["id"], digest))
