"""Fixtures for the service tests: an app on a real backend, dev keys, bearer tokens for any
identity, and valid identifiers made with python-stdnum (an independent implementation of
the check keys).

Every test that uses the app runs twice, once per backend (``backend_kind``): the embedded
store, durable in tmp_path, and PostgreSQL, a database of the session's throwaway cluster
(``tests/conftest.py``). A test module may pin one backend by overriding ``backend_kind``."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from ordonum.service import Services, Settings, create_app
from ordonum.service.devidp import claims_for, mint_token
from ordonum.service.keys import ensure_keys, load_idp_key
from stdnum import ean, luhn

_rng = random.Random(20250101)


def rpps() -> str:
    body = "1" + "".join(_rng.choice("0123456789") for _ in range(9))
    return body + luhn.calc_check_digit(body)


def finess() -> str:
    body = "75" + "".join(_rng.choice("0123456789") for _ in range(6))
    return body + luhn.calc_check_digit(body)


def nir() -> str:
    body = (
        _rng.choice("12")
        + f"{_rng.randint(40, 99):02d}"
        + f"{_rng.randint(1, 12):02d}"
        + f"{_rng.randint(1, 95):02d}"
        + f"{_rng.randint(1, 999):03d}"
        + f"{_rng.randint(1, 999):03d}"
    )
    return body + f"{97 - int(body) % 97:02d}"


def cip13() -> str:
    body = "34009" + "".join(_rng.choice("0123456789") for _ in range(7))
    return body + ean.calc_check_digit(body)


def prescription_body(patient_nir: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient": {"nir": patient_nir, "name": "Camille Martin", "birth_date": "1980-05-17"},
        "lines": [
            {
                "label": "AMOXICILLINE 500 mg gélule",
                "cip13": cip13(),
                "dosage": "1 gélule matin et soir pendant 6 jours",
                "quantity": 12,
            },
            {"label": "Paracétamol 1 g", "dosage": "si douleur", "quantity": 8, "renewals": 1},
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["embedded", "postgresql"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def settings(tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest) -> Settings:
    store = request.getfixturevalue("pg_url") if backend_kind == "postgresql" else ""
    return Settings(
        data_dir=tmp_path / "data", store=store, pg_pool=4, access_log=False, rate=1000, burst=1000
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = await Services.open(settings)
    yield svc
    await svc.close()


@pytest.fixture
def app(settings: Settings, services: Services) -> FastAPI:
    return create_app(settings, services=services)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ordonum.test") as c:
        yield c


Bearer = Callable[..., dict[str, str]]


@pytest.fixture
def idp_key(settings: Settings) -> Ed25519PrivateKey:
    ensure_keys(settings.keys_dir)
    return load_idp_key(settings.keys_dir)


@pytest.fixture
def bearer(settings: Settings, idp_key: Ed25519PrivateKey) -> Bearer:
    """``bearer(role, ident, rpps=None, ttl=3600, forged=False)`` -> Authorization header."""
    forger = Ed25519PrivateKey.generate()

    def make(
        role: str, ident: str, rpps: str | None = None, ttl: float = 3600, forged: bool = False
    ) -> dict[str, str]:
        claims = claims_for(
            role, ident, rpps=rpps, ttl=ttl, audience=settings.audience, issuer=settings.issuer
        )
        token = mint_token(forger if forged else idp_key, claims)
        return {"Authorization": f"Bearer {token}"}

    return make
