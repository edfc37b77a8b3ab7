"""Bearer JWT authentication (OpenID Connect access tokens, e.g. Pro Santé Connect).

PyJWT verifies the signature (EdDSA or ES256, the key chosen by the ``kid`` header among the
provider's JWKS), ``exp``, ``aud`` and ``iss``. Then the claims must make a known principal:
``role`` is ``prescriber`` (with ``rpps``), ``pharmacist`` (with the pharmacy's ``finess`` and
the pharmacist's ``rpps``) or ``patient`` (with ``nir``), every identifier valid by
:mod:`ordonum.checks`. Any failure is a 401 with ``WWW-Authenticate: Bearer error=...``.

Verified tokens are cached, keyed by the raw token text, until their ``exp``: a hot client
(one pharmacy counter) pays one signature check per token, not per request. The cache is
bounded; when full, the oldest entry goes (FIFO: cheaper than LRU, and expiry bounds its
worth anyway). A token is only cached after a full verification, so a cache hit is exactly
the same decision as a fresh check made at that time, minus ``exp``, which is rechecked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from jwt import PyJWK, PyJWKSet

from ordonum import checks
from ordonum.service.problems import ProblemError

__all__ = ["ROLES", "JwksKeys", "Principal", "Role", "TokenVerifier"]

log = logging.getLogger("ordonum.service")

Role = Literal["prescriber", "pharmacist", "patient"]
ROLES: tuple[Role, ...] = ("prescriber", "pharmacist", "patient")
ALGORITHMS = ("EdDSA", "ES256")
# A JWKS URL is fetched again for an unknown kid at most this often (key rotation).
JWKS_REFRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, from a verified bearer token."""

    sub: str
    role: Role
    exp: float
    rpps: str | None = None
    finess: str | None = None
    nir: str | None = None

    @property
    def key(self) -> str:
        """The identity rate limits are kept for."""
        return f"{self.role}:{self.sub}"

    @property
    def actor(self) -> str:
        """How the access log names this caller."""
        if self.role == "pharmacist":
            return f"pharmacy:{self.finess}/pharmacist:{self.rpps}"
        if self.role == "prescriber":
            return f"prescriber:{self.rpps}"
        return f"patient:{self.nir}"


def unauthorized(error: str, description: str) -> ProblemError:
    return ProblemError(
        401,
        description,
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'},
    )


class JwksKeys:
    """The identity provider's public keys, from a JWKS file or URL, by ``kid``."""

    def __init__(self, *, file: Path | None = None, url: str | None = None) -> None:
        if (file is None) == (url is None):
            raise ValueError("give exactly one of a JWKS file or a JWKS URL")
        self._file = file
        self._url = url
        self._lock = threading.Lock()
        self._last_fetch = 0.0
        self._keys: dict[str | None, PyJWK] = {}
        self._load()

    def _fetch(self) -> dict[str, Any]:
        if self._file is not None:
            data: dict[str, Any] = json.loads(self._file.read_text(encoding="utf-8"))
            return data
        assert self._url is not None
        with urllib.request.urlopen(self._url, timeout=5) as reply:
            fetched: dict[str, Any] = json.loads(reply.read())
            return fetched

    def _load(self) -> None:
        jwks = PyJWKSet.from_dict(self._fetch())
        keys: dict[str | None, PyJWK] = {}
        for key in jwks.keys:
            if key.algorithm_name not in ALGORITHMS:
                log.warning("JWKS key ignored (algorithm)", extra={"kid": key.key_id})
                continue
            keys[key.key_id] = key
        if len(keys) == 1:
            keys[None] = next(iter(keys.values()))  # tokens without a kid header
        self._keys = keys
        self._last_fetch = time.monotonic()
        log.info("JWKS loaded", extra={"kids": sorted(k for k in keys if k is not None)})

    def get(self, kid: str | None) -> PyJWK | None:
        key = self._keys.get(kid)
        if key is None and self._url is not None:
            with self._lock:
                if time.monotonic() - self._last_fetch >= JWKS_REFRESH_SECONDS:
                    try:
                        self._load()
                    except (OSError, ValueError, jwt.PyJWTError) as exc:
                        log.warning("JWKS refresh failed", extra={"error": str(exc)})
                        self._last_fetch = time.monotonic()
            key = self._keys.get(kid)
        return key


def _valid(validate: Callable[[str], str], value: Any, claim: str) -> str:
    if not isinstance(value, str):
        raise unauthorized("invalid_token", f"claim {claim} missing or not a string")
    try:
        return validate(value)
    except ValueError:
        raise unauthorized("invalid_token", f"claim {claim} is not a valid identifier") from None


class TokenVerifier:
    """Verifies bearer tokens into :class:`Principal` objects, with a bounded cache."""

    def __init__(
        self,
        keys: JwksKeys,
        *,
        audience: str,
        issuer: str | None,
        cache_size: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer or None
        self._cache: dict[str, Principal] = {}
        self._cache_size = cache_size
        self._clock = clock
        self._required = ["exp", "aud", "sub"] + (["iss"] if self._issuer else [])

    def verify(self, raw: str) -> Principal:
        """The principal of a bearer token, or :class:`ProblemError` 401."""
        now = self._clock()
        principal = self._cache.get(raw)
        if principal is not None:
            if principal.exp > now:
                return principal
            del self._cache[raw]
            raise unauthorized("invalid_token", "token expired")
        principal = self._verify(raw, now)
        if self._cache_size > 0:
            if len(self._cache) >= self._cache_size:
                # one event loop thread: nothing else empties the cache meanwhile
                del self._cache[next(iter(self._cache))]
            self._cache[raw] = principal
        return principal

    def _verify(self, raw: str, now: float) -> Principal:
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError:
            raise unauthorized("invalid_token", "malformed token") from None
        kid = header.get("kid")
        key = self._keys.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise unauthorized("invalid_token", "unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("invalid_token", "token expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("invalid_token", "wrong audience") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("invalid_token", "wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("invalid_token", "bad signature") from None
        except jwt.PyJWTError as exc:
            raise unauthorized("invalid_token", f"invalid token ({type(exc).__name__})") from None
        return self._principal(claims)

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        role = claims.get("role")
        sub = claims.get("sub")
        exp = claims.get("exp")
        if not isinstance(sub, str) or not sub:
            raise unauthorized("invalid_token", "claim sub missing")
        if not isinstance(exp, int | float):
            raise unauthorized("invalid_token", "claim exp missing")
        if role == "prescriber":
            rpps = _valid(checks.validate_rpps, claims.get("rpps"), "rpps")
            return Principal(sub=sub, role="prescriber", exp=float(exp), rpps=rpps)
        if role == "pharmacist":
            finess = _valid(checks.validate_finess, claims.get("finess"), "finess")
            rpps = _valid(checks.validate_rpps, claims.get("rpps"), "rpps")
            return Principal(sub=sub, role="pharmacist", exp=float(exp), rpps=rpps, finess=finess)
        if role == "patient":
            nir = _valid(checks.validate_nir, claims.get("nir"), "nir")
            return Principal(sub=sub, role="patient", exp=float(exp), nir=nir)
        raise unauthorized("invalid_token", "unknown role")
