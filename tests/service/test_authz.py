"""The authorization matrix: every endpoint x caller (role and relationship) x credential.

The subject is prescription X of prescriber P1 and patient N1 (consent on) and Y, the same
with the patient's objection. Callers: P1 (its prescriber), P2 (another prescriber), N1 (its
patient), N2 (another patient), PH (a pharmacy holding X's QR token). Credentials: a valid
bearer token, an expired one, one forged (signed by another key under the real kid), one for
another audience, none. Only valid credentials get past 401; then each cell has its one
expected status, and no answer outside the allowed cells carries X's ID or N1's data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from ordonum.service import Services

from .conftest import Bearer, finess, nir, prescription_body, rpps

pytestmark = pytest.mark.anyio

CALLERS = ("P1", "P2", "N1", "N2", "PH")
CREDENTIALS = ("valid", "expired", "forged", "wrong_audience", "none")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # {X} / {Y} substituted
    body: str | None  # a key of Setup.bodies
    expected: dict[str, int]  # caller -> status with a valid token


ENDPOINTS = [
    Endpoint(
        "create",
        "POST",
        "/v1/prescriptions",
        "create",
        {"P1": 201, "P2": 201, "N1": 403, "N2": 403, "PH": 403},
    ),
    Endpoint(
        "qr.svg",
        "GET",
        "/v1/prescriptions/{X}/qr.svg",
        None,
        {"P1": 200, "P2": 404, "N1": 200, "N2": 404, "PH": 403},
    ),
    Endpoint(
        "qr.png",
        "GET",
        "/v1/prescriptions/{X}/qr.png",
        None,
        {"P1": 200, "P2": 404, "N1": 200, "N2": 404, "PH": 403},
    ),
    Endpoint(
        "scan", "POST", "/v1/scan", "scan", {"P1": 403, "P2": 403, "N1": 403, "N2": 403, "PH": 200}
    ),
    Endpoint(
        "dispense",
        "POST",
        "/v1/prescriptions/{X}/dispensations",
        "dispense",
        {"P1": 403, "P2": 403, "N1": 403, "N2": 403, "PH": 201},
    ),
    Endpoint(
        "dispense other path",
        "POST",
        "/v1/prescriptions/{Y}/dispensations",
        "dispense",
        {"P1": 403, "P2": 403, "N1": 403, "N2": 403, "PH": 404},
    ),
    Endpoint(
        "dispensations consented",
        "GET",
        "/v1/prescriptions/{X}/dispensations",
        None,
        {"P1": 200, "P2": 404, "N1": 200, "N2": 404, "PH": 403},
    ),
    Endpoint(
        "dispensations objected",
        "GET",
        "/v1/prescriptions/{Y}/dispensations",
        None,
        {"P1": 403, "P2": 404, "N1": 200, "N2": 404, "PH": 403},
    ),
    Endpoint(
        "cancel",
        "POST",
        "/v1/prescriptions/{X}/cancel",
        None,
        {"P1": 200, "P2": 404, "N1": 403, "N2": 403, "PH": 403},
    ),
    Endpoint(
        "consent",
        "PUT",
        "/v1/prescriptions/{X}/consent",
        "consent",
        {"P1": 403, "P2": 403, "N1": 200, "N2": 404, "PH": 403},
    ),
    Endpoint(
        "me",
        "GET",
        "/v1/me/prescriptions",
        None,
        {"P1": 403, "P2": 403, "N1": 200, "N2": 200, "PH": 403},
    ),
    Endpoint(
        "access log",
        "GET",
        "/v1/prescriptions/{X}/access-log",
        None,
        {"P1": 403, "P2": 403, "N1": 200, "N2": 404, "PH": 403},
    ),
]
# Cells where the caller legitimately sees X's (or Y's) data.
ALLOWED = {
    ("qr.svg", "P1"),
    ("qr.svg", "N1"),
    ("qr.png", "P1"),
    ("qr.png", "N1"),
    ("scan", "PH"),
    ("dispense", "PH"),
    ("dispensations consented", "P1"),
    ("dispensations consented", "N1"),
    ("dispensations objected", "N1"),
    ("cancel", "P1"),
    ("consent", "N1"),
    ("me", "N1"),
    ("access log", "N1"),
}


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
async def test_matrix(
    client: httpx.AsyncClient,
    bearer: Bearer,
    services: Services,
    settings: Any,
    endpoint: Endpoint,
    caller: str,
    credential: str,
) -> None:
    p1, p2, n1, n2 = rpps(), rpps(), nir(), nir()
    pharmacy, pharmacist = finess(), rpps()
    owner = bearer("prescriber", p1)
    x = (await client.post("/v1/prescriptions", json=prescription_body(n1), headers=owner)).json()
    y = (
        await client.post(
            "/v1/prescriptions",
            json=prescription_body(n1, prescriber_may_view_dispensations=False),
            headers=owner,
        )
    ).json()
    identities = {
        "P1": ("prescriber", p1, None),
        "P2": ("prescriber", p2, None),
        "N1": ("patient", n1, None),
        "N2": ("patient", n2, None),
        "PH": ("pharmacist", pharmacy, pharmacist),
    }
    role, ident, extra = identities[caller]
    if credential == "valid":
        headers = bearer(role, ident, rpps=extra)
    elif credential == "expired":
        headers = bearer(role, ident, rpps=extra, ttl=-60)
    elif credential == "forged":
        headers = bearer(role, ident, rpps=extra, forged=True)
    elif credential == "wrong_audience":
        from ordonum.service.devidp import claims_for, mint_token
        from ordonum.service.keys import load_idp_key

        claims = claims_for(role, ident, rpps=extra, audience="someone-else")
        headers = {"Authorization": f"Bearer {mint_token(load_idp_key(settings.keys_dir), claims)}"}
    else:
        headers = {}
    bodies: dict[str, Any] = {
        "create": prescription_body(n2),
        "scan": {"token": x["token"]},
        "dispense": {"token": x["token"], "lines": [{"line": 0, "quantity": 1}]},
        "consent": {"prescriber_may_view_dispensations": False},
    }
    if endpoint.body == "dispense":
        headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    path = endpoint.path.format(X=x["id"], Y=y["id"])
    reply = await client.request(
        endpoint.method,
        path,
        headers=headers,
        json=bodies[endpoint.body] if endpoint.body else None,
    )
    expected = endpoint.expected[caller] if credential == "valid" else 401
    assert reply.status_code == expected, reply.text
    if expected == 401:
        assert reply.headers["www-authenticate"].startswith("Bearer")
    if reply.status_code >= 400:
        assert reply.headers["content-type"] == "application/problem+json"
    if (endpoint.name, caller) not in ALLOWED or credential != "valid":
        for secret in (x["id"], y["id"], n1, x["access_code"]):
            assert secret.encode() not in reply.content
    if endpoint.name == "me" and caller == "N1" and credential == "valid":
        assert {p["id"] for p in reply.json()["prescriptions"]} == {x["id"], y["id"]}


async def test_unknown_role_and_malformed_tokens(
    client: httpx.AsyncClient, settings: Any, bearer: Bearer
) -> None:
    import jwt
    from ordonum.service.keys import IDP_KID, load_idp_key

    key = load_idp_key(settings.keys_dir)
    claims = {
        "sub": "x",
        "role": "admin",
        "aud": settings.audience,
        "iss": settings.issuer,
        "exp": 4_000_000_000,
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": IDP_KID})
    for auth in (f"Bearer {token}", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer "):
        reply = await client.get("/v1/me/prescriptions", headers={"Authorization": auth})
        assert reply.status_code == 401, auth
        assert reply.headers["www-authenticate"].startswith("Bearer")
    # a patient token whose NIR fails its check key
    bad = {
        "sub": "x",
        "role": "patient",
        "nir": "180057512345600",
        "aud": settings.audience,
        "iss": settings.issuer,
        "exp": 4_000_000_000,
    }
    token = jwt.encode(bad, key, algorithm="EdDSA", headers={"kid": IDP_KID})
    reply = await client.get("/v1/me/prescriptions", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 401
    # alg=none is refused
    unsigned = jwt.encode({**claims, "role": "patient"}, None, algorithm="none")
    reply = await client.get(
        "/v1/me/prescriptions", headers={"Authorization": f"Bearer {unsigned}"}
    )
    assert reply.status_code == 401


async def test_token_cache_still_checks_expiry(settings: Any, bearer: Bearer) -> None:
    from ordonum.service.auth import JwksKeys, TokenVerifier
    from ordonum.service.problems import ProblemError

    now = [1_000.0]
    verifier = TokenVerifier(
        JwksKeys(file=settings.jwks_path),
        audience=settings.audience,
        issuer=settings.issuer,
        cache_size=2,
        clock=lambda: now[0],
    )
    import time

    from ordonum.service.devidp import claims_for, mint_token
    from ordonum.service.keys import load_idp_key

    key = load_idp_key(settings.keys_dir)
    token = mint_token(key, claims_for("patient", nir(), ttl=60, now=time.time()))
    now[0] = time.time()
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # cached: the very same object
    now[0] = first.exp + 1
    with pytest.raises(ProblemError) as info:
        verifier.verify(token)
    assert info.value.status == 401
    # bounded: three tokens in a cache of two
    now[0] = time.time()
    for _ in range(3):
        verifier.verify(mint_token(key, claims_for("patient", nir(), ttl=60)))
    assert len(verifier._cache) == 2
