"""The development identity provider: bearer tokens for local use and tests.

In production the bearer tokens come from the professionals' OpenID Connect provider (Pro
Santé Connect) and the patients' one; the service only holds their public keys (JWKS). This
module signs tokens with ``DATA/keys/idp-signing.pem`` so a newcomer can try the service;
``ordonum token`` prints them.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ordonum import checks
from ordonum.service.auth import ROLES
from ordonum.service.keys import IDP_KID

__all__ = ["claims_for", "mint_token"]


def claims_for(
    role: str,
    ident: str,
    *,
    rpps: str | None = None,
    ttl: float = 3600,
    audience: str = "ordonum",
    issuer: str | None = "ordonum-dev-idp",
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a development token; identifiers validated (``ValueError`` if not).

    ``ident`` is the prescriber's RPPS, the pharmacy's FINESS (then ``rpps`` is the
    pharmacist's, required) or the patient's NIR. A negative ``ttl`` makes an expired token.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "aud": audience,
        "iat": int(issued),
        "exp": int(issued + ttl),
        "role": role,
    }
    if issuer:
        claims["iss"] = issuer
    if role == "prescriber":
        claims["rpps"] = checks.validate_rpps(ident)
        claims["sub"] = f"rpps:{claims['rpps']}"
    elif role == "pharmacist":
        if rpps is None:
            raise ValueError("a pharmacist token needs --rpps (the pharmacist's RPPS)")
        claims["finess"] = checks.validate_finess(ident)
        claims["rpps"] = checks.validate_rpps(rpps)
        claims["sub"] = f"rpps:{claims['rpps']}"
    else:
        claims["nir"] = checks.validate_nir(ident)
        claims["sub"] = f"nir:{claims['nir']}"
    return claims


def mint_token(key: Ed25519PrivateKey, claims: dict[str, Any], *, kid: str = IDP_KID) -> str:
    """An EdDSA JWT over ``claims``."""
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
