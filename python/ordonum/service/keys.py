"""The service's key files in ``DATA/keys/``: created on first run, never overwritten.

=============================  =============================================================
``qr-signing-<KID>.pem``       Ed25519 signing key (PKCS#8) for QR tokens and
                               acknowledgements, one file per kid (``KID``: 4 characters
                               ``[A-Z0-9]``, the token format's key id)
``qr-signing.kid``             the kid that signs new tokens; every ``qr-signing-*.pem`` stays
                               trusted for verification (tokens already printed keep working)
``idp-signing.pem``            the development identity provider's Ed25519 key (PKCS#8):
                               ``ordonum token`` signs bearer tokens with it
``idp.jwks.json``              its public key as a JWKS: what the service trusts by default
=============================  =============================================================

Rotation (``ordonum keys new --kid KID``) writes a new PEM, then replaces ``qr-signing.kid``
with an atomic rename: a crash leaves either the old or the new kid active, never neither.
Private key files are created with mode 0600 and ``O_EXCL``: nothing is ever overwritten.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ordonum import KeyRing, SigningKey, Token, TokenCache

__all__ = [
    "DEFAULT_QR_KID",
    "IDP_KID",
    "QrKeys",
    "ensure_keys",
    "load_idp_key",
    "load_qr_keys",
    "new_qr_key",
]

log = logging.getLogger("ordonum.service")
DEFAULT_QR_KID = "DEV1"
IDP_KID = "ordonum-dev-idp-1"


@dataclass(frozen=True)
class QrKeys:
    """The active QR signing key and the ring of every trusted QR verifying key."""

    signing: SigningKey
    keyring: KeyRing
    tokens: TokenCache = field(init=False)
    """What :attr:`verify` accepted (a visit at the counter sends one QR token two to four
    times: the scan, then each dispensation; see :class:`ordonum.TokenCache`)."""
    verify: Callable[[str], Token] = field(init=False)
    """Checks a token text against ``keyring``: ``tokens.verify``."""

    def __post_init__(self) -> None:
        tokens = TokenCache(self.keyring)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "verify", tokens.verify)


def _create(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _create(tmp, data, 0o644)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_qr_key(keys_dir: Path, kid: str) -> SigningKey:
    """Generate a QR signing key under ``kid`` and make it the active one.

    ``ValueError`` if the kid is malformed or already has a key (keys are never overwritten).
    """
    key = SigningKey.generate(kid)  # validates the kid's form
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"qr-signing-{key.kid}.pem"
    try:
        _create(path, key.to_pem().encode(), 0o600)
    except FileExistsError:
        raise ValueError(f"a QR signing key with kid {kid!r} already exists: {path}") from None
    _replace(keys_dir / "qr-signing.kid", f"{key.kid}\n".encode())
    log.info("QR signing key created", extra={"kid": key.kid, "path": str(path)})
    return key


def load_qr_keys(keys_dir: Path, *, max_age: float | None = None) -> QrKeys:
    """The active signing key and a key ring of all ``qr-signing-*.pem`` public keys."""
    active = (keys_dir / "qr-signing.kid").read_text(encoding="ascii").strip()
    ring = KeyRing(max_age=max_age)
    signing: SigningKey | None = None
    for path in sorted(keys_dir.glob("qr-signing-*.pem")):
        kid = path.stem.removeprefix("qr-signing-")
        key = SigningKey.from_pem(kid, path.read_bytes())
        ring.add(key.verifying_key())
        if kid == active:
            signing = key
    if signing is None:
        raise FileNotFoundError(f"no key file for the active QR kid {active!r} in {keys_dir}")
    return QrKeys(signing=signing, keyring=ring)


def load_idp_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The development identity provider's private key."""
    key = serialization.load_pem_private_key(
        (keys_dir / "idp-signing.pem").read_bytes(), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{keys_dir / 'idp-signing.pem'} is not an Ed25519 private key")
    return key


def ensure_keys(keys_dir: Path) -> list[Path]:
    """Create whatever key file is missing (never touching existing ones); return the new ones."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    if not (keys_dir / "qr-signing.kid").exists():
        key = new_qr_key(keys_dir, DEFAULT_QR_KID)
        created += [keys_dir / f"qr-signing-{key.kid}.pem", keys_dir / "qr-signing.kid"]
    idp_pem = keys_dir / "idp-signing.pem"
    if not idp_pem.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            _create(idp_pem, pem, 0o600)
            created.append(idp_pem)
            log.info("development identity-provider key created", extra={"path": str(idp_pem)})
        except FileExistsError:  # pragma: no cover - created concurrently
            pass
    jwks = keys_dir / "idp.jwks.json"
    if not jwks.exists():
        public = load_idp_key(keys_dir).public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        doc = {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(raw),
                    "kid": IDP_KID,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }
        try:
            _create(jwks, (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
            created.append(jwks)
            log.info("development JWKS written", extra={"path": str(jwks)})
        except FileExistsError:  # pragma: no cover - created concurrently
            pass
    return created
