"""Every flow end to end over HTTP against the ASGI app (a durable store in tmp_path)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from ordonum.service import Services

from .conftest import Bearer, cip13, finess, nir, prescription_body, rpps

pytestmark = pytest.mark.anyio


class World:
    def __init__(self, bearer: Bearer) -> None:
        self.rpps, self.nir = rpps(), nir()
        self.finess, self.pharmacist = finess(), rpps()
        self.prescriber_h = bearer("prescriber", self.rpps)
        self.patient_h = bearer("patient", self.nir)
        self.pharmacy_h = bearer("pharmacist", self.finess, rpps=self.pharmacist)


@pytest.fixture
def world(bearer: Bearer) -> World:
    return World(bearer)


async def create(client: httpx.AsyncClient, w: World, **overrides: Any) -> dict[str, Any]:
    reply = await client.post(
        "/v1/prescriptions", json=prescription_body(w.nir, **overrides), headers=w.prescriber_h
    )
    assert reply.status_code == 201, reply.text
    out: dict[str, Any] = reply.json()
    return out


def dispense_headers(w: World, key: str | None = None) -> dict[str, str]:
    return {**w.pharmacy_h, "Idempotency-Key": key or str(uuid.uuid4())}


async def test_full_dispensing_flow(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    created = await create(client, world)
    rx = created["id"]
    assert created["token"].startswith("RX1:")
    assert created["qr_svg_url"] == f"/v1/prescriptions/{rx}/qr.svg"

    scan = await client.post("/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h)
    assert scan.status_code == 200
    assert scan.headers["content-type"] == "application/json"
    doc = scan.json()
    assert doc["id"] == rx
    assert doc["status"] == "active"
    assert [line["line"] for line in doc["lines"]] == [0, 1]
    assert [line["remaining"] for line in doc["lines"]] == [12, 16]  # 8 x (1 + 1 renewal)
    assert doc["patient"]["nir"] == world.nir
    assert doc["dispensations"] == []

    # partial: 6 of line 0, with a substitution agreed by nobody
    partial = {
        "token": created["token"],
        "lines": [
            {"line": 0, "quantity": 6, "cip13": cip13(), "intervention": {"kind": "substitution"}}
        ],
    }
    first = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json=partial,
        headers=dispense_headers(world, "k-1"),
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "partially_dispensed"
    assert first.json()["lines"] == [{"line": 0, "remaining": 6}, {"line": 1, "remaining": 16}]

    # the same Idempotency-Key: the first answer, nothing written
    again = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json=partial,
        headers=dispense_headers(world, "k-1"),
    )
    assert again.status_code == 201
    assert again.json()["dispensation_id"] == first.json()["dispensation_id"]
    assert again.json()["lines"] == first.json()["lines"]
    assert again.json()["replayed"] is True
    # the same key for a different request is a client error, not a second write
    reused = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json={"token": created["token"], "lines": [{"line": 0, "quantity": 1}]},
        headers=dispense_headers(world, "k-1"),
    )
    assert reused.status_code == 409

    second = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json={
            "access_code": created["access_code"].lower(),
            "lines": [{"line": 0, "quantity": 6}, {"line": 1, "quantity": 16}],
        },
        headers=dispense_headers(world),
    )
    assert second.status_code == 201, second.text
    assert second.json()["status"] == "dispensed"
    assert {line["remaining"] for line in second.json()["lines"]} == {0}

    scan = await client.post("/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h)
    doc = scan.json()
    assert doc["status"] == "dispensed"
    assert len(doc["dispensations"]) == 2
    assert doc["dispensations"][0]["pharmacy_finess"] == world.finess
    assert doc["dispensations"][0]["pharmacist_rpps"] == world.pharmacist
    assert doc["dispensations"][0]["lines"][0]["intervention"]["kind"] == "substitution"

    third = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json={"token": created["token"], "lines": [{"line": 1, "quantity": 1}]},
        headers=dispense_headers(world),
    )
    assert third.status_code == 409
    assert third.headers["content-type"] == "application/problem+json"
    assert third.json()["status"] == 409

    listed = await client.get(f"/v1/prescriptions/{rx}/dispensations", headers=world.patient_h)
    assert [d["dispensation_id"] for d in listed.json()["dispensations"]] == [
        first.json()["dispensation_id"],
        second.json()["dispensation_id"],
    ]
    if services.backend.kind == "embedded":  # PostgreSQL: one database for the session
        assert await services.backend.count() == 1


async def test_over_dispensing_is_refused(client: httpx.AsyncClient, world: World) -> None:
    created = await create(client, world)
    reply = await client.post(
        f"/v1/prescriptions/{created['id']}/dispensations",
        json={"token": created["token"], "lines": [{"line": 0, "quantity": 13}]},
        headers=dispense_headers(world),
    )
    assert reply.status_code == 409
    assert reply.json()["type"] == "/problems/conflict"


async def test_manual_entry_and_the_uniform_404(client: httpx.AsyncClient, world: World) -> None:
    created = await create(client, world)
    rx, code = created["id"], created["access_code"]
    ok = await client.post(
        "/v1/scan", json={"id": rx.lower(), "access_code": code}, headers=world.pharmacy_h
    )
    assert ok.status_code == 200
    assert ok.json()["id"] == rx

    other = await create(client, world)
    wrong_code = await client.post(
        "/v1/scan", json={"id": rx, "access_code": other["access_code"]}, headers=world.pharmacy_h
    )
    unknown_id = await client.post(
        "/v1/scan",
        json={"id": "0000-0000-0000-0000-0", "access_code": code},
        headers=world.pharmacy_h,
    )
    garbage = await client.post(
        "/v1/scan", json={"id": rx, "access_code": "not a code"}, headers=world.pharmacy_h
    )
    forged = created["token"][:-4] + ("AAAA" if not created["token"].endswith("AAAA") else "BBBB")
    bad_token = await client.post("/v1/scan", json={"token": forged}, headers=world.pharmacy_h)
    other_token_wrong_path = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json={"token": other["token"], "lines": [{"line": 0, "quantity": 1}]},
        headers=dispense_headers(world),
    )
    replies = [wrong_code, unknown_id, garbage, bad_token, other_token_wrong_path]
    assert {r.status_code for r in replies} == {404}
    assert len({r.content for r in replies}) == 1
    assert rx.encode() not in wrong_code.content
    assert wrong_code.headers["content-type"] == "application/problem+json"


async def test_wrong_codes_lock_manual_entry(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    created = await create(client, world)
    rx = created["id"]
    other = await create(client, world)
    for _ in range(services.settings.lockout_failures):
        reply = await client.post(
            "/v1/scan",
            json={"id": rx, "access_code": other["access_code"]},
            headers=world.pharmacy_h,
        )
        assert reply.status_code == 404
    locked = await client.post(
        "/v1/scan", json={"id": rx, "access_code": created["access_code"]}, headers=world.pharmacy_h
    )
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    # the QR path is not locked
    scanned = await client.post(
        "/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h
    )
    assert scanned.status_code == 200


async def test_cancel(client: httpx.AsyncClient, world: World) -> None:
    created = await create(client, world)
    rx = created["id"]
    reply = await client.post(f"/v1/prescriptions/{rx}/cancel", headers=world.prescriber_h)
    assert reply.status_code == 200
    assert reply.json() == {"id": rx, "status": "cancelled"}
    scan = await client.post("/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h)
    assert scan.json()["status"] == "cancelled"
    refused = await client.post(
        f"/v1/prescriptions/{rx}/dispensations",
        json={"token": created["token"], "lines": [{"line": 0, "quantity": 1}]},
        headers=dispense_headers(world),
    )
    assert refused.status_code == 409


async def test_cancel_after_full_dispensation_conflicts(
    client: httpx.AsyncClient, world: World
) -> None:
    created = await create(client, world, lines=[{"label": "x", "dosage": "y", "quantity": 1}])
    done = await client.post(
        f"/v1/prescriptions/{created['id']}/dispensations",
        json={"token": created["token"], "lines": [{"line": 0, "quantity": 1}]},
        headers=dispense_headers(world),
    )
    assert done.json()["status"] == "dispensed"
    reply = await client.post(
        f"/v1/prescriptions/{created['id']}/cancel", headers=world.prescriber_h
    )
    assert reply.status_code == 409


async def test_consent_on_and_off(client: httpx.AsyncClient, world: World) -> None:
    created = await create(client, world, prescriber_may_view_dispensations=False)
    rx = created["id"]
    url = f"/v1/prescriptions/{rx}/dispensations"
    assert (await client.get(url, headers=world.prescriber_h)).status_code == 403
    on = await client.put(
        f"/v1/prescriptions/{rx}/consent",
        json={"prescriber_may_view_dispensations": True},
        headers=world.patient_h,
    )
    assert on.status_code == 200
    assert on.json() == {"id": rx, "prescriber_may_view_dispensations": True}
    seen = await client.get(url, headers=world.prescriber_h)
    assert seen.status_code == 200
    assert seen.json() == {"dispensations": []}
    off = await client.put(
        f"/v1/prescriptions/{rx}/consent",
        json={"prescriber_may_view_dispensations": False},
        headers=world.patient_h,
    )
    assert off.status_code == 200
    assert (await client.get(url, headers=world.prescriber_h)).status_code == 403
    assert (await client.get(url, headers=world.patient_h)).status_code == 200


async def test_patient_listing_with_cursor(client: httpx.AsyncClient, world: World) -> None:
    ids = [(await create(client, world))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["before"] = cursor
        page = await client.get("/v1/me/prescriptions", params=params, headers=world.patient_h)
        assert page.status_code == 200
        body = page.json()
        seen += [p["id"] for p in body["prescriptions"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    assert pages == 3


async def test_access_log(client: httpx.AsyncClient, world: World) -> None:
    created = await create(client, world)
    rx = created["id"]
    await client.post("/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h)
    await client.post(
        "/v1/scan",
        json={"id": rx, "access_code": created["access_code"]},
        headers=world.pharmacy_h,
    )
    reply = await client.get(f"/v1/prescriptions/{rx}/access-log", headers=world.patient_h)
    assert reply.status_code == 200
    log = reply.json()["access_log"]
    assert [entry["action"] for entry in log] == ["scan", "scan"]
    assert log[0]["actor"] == f"pharmacy:{world.finess}/pharmacist:{world.pharmacist}"


async def test_qr_images(client: httpx.AsyncClient, world: World) -> None:
    import zxingcpp
    from PIL import Image

    created = await create(client, world)
    png = await client.get(created["qr_png_url"], headers=world.patient_h)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    import io

    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
    assert [d.text for d in decoded] == [created["token"]]
    svg = await client.get(created["qr_svg_url"], headers=world.prescriber_h)
    assert svg.status_code == 200
    assert svg.text.startswith("<")
    assert svg.headers["content-type"].startswith("image/svg+xml")


async def test_acknowledgement_verifies_independently(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    body = prescription_body(world.nir)
    reply = await client.post("/v1/prescriptions", json=body, headers=world.prescriber_h)
    out = reply.json()
    ack = out["acknowledgement"]
    assert ack["kid"] == services.qr.signing.kid
    pem = services.qr.signing.verifying_key().to_pem()
    public = load_pem_public_key(pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    doc = (
        await client.post("/v1/scan", json={"token": out["token"]}, headers=world.pharmacy_h)
    ).json()
    created_ms = round(
        __import__("datetime").datetime.fromisoformat(ack["received_at"]).timestamp() * 1000
    )
    content = {
        "id": out["id"],
        "created_at_ms": created_ms,
        "prescriber_rpps": world.rpps,
        "patient": body["patient"],
        "valid_until_ms": created_ms + 90 * 86_400_000,
        "lines": [
            {
                "label": line["label"],
                "cip13": line.get("cip13"),
                "dosage": line["dosage"],
                "quantity": line["quantity"],
                "renewals": line.get("renewals", 0),
                "substitutable": line.get("substitutable", True),
            }
            for line in body["lines"]
        ],
    }
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).digest()
    assert ack["digest"] == digest.hex()
    signature = base64.urlsafe_b64decode(ack["signature"] + "==")
    public.verify(signature, b"ordonum/ack/v1\0" + out["id"].encode() + b"\0" + digest)
    assert doc["id"] == out["id"]


async def test_problems_for_validation_routing_and_size(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    extra = prescription_body(world.nir)
    extra["status"] = "dispensed"
    reply = await client.post("/v1/prescriptions", json=extra, headers=world.prescriber_h)
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["errors"][0]["loc"] == "body.status"

    bad_nir = prescription_body(world.nir[:-2] + "00" if not world.nir.endswith("00") else "01")
    reply = await client.post("/v1/prescriptions", json=bad_nir, headers=world.prescriber_h)
    assert reply.status_code == 422
    assert "nir" in reply.json()["detail"]

    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.delete("/v1/scan")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status"] == 405

    big = b'{"token": "' + b"A" * services.settings.max_body + b'"}'
    reply = await client.post(
        "/v1/scan", content=big, headers={**world.pharmacy_h, "Content-Type": "application/json"}
    )
    assert reply.status_code == 413
    assert reply.json()["type"] == "/problems/payload-too-large"

    no_key = await client.post(
        "/v1/prescriptions/0000-0000-0000-0000-0/dispensations",
        json={"access_code": "x", "lines": [{"line": 0, "quantity": 1}]},
        headers=world.pharmacy_h,
    )
    assert no_key.status_code == 422


async def test_request_id_metrics_health(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    reply = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"
    assert reply.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert generated.headers["x-request-id"] != "bad id\twith tab"
    assert len(generated.headers["x-request-id"]) == 16
    created = await create(client, world)
    scanned = await client.post(
        "/v1/scan", json={"token": created["token"]}, headers=world.pharmacy_h
    )
    assert scanned.status_code == 200
    dispensed = await client.post(
        f"/v1/prescriptions/{created['id']}/dispensations",
        json={"token": created["token"], "lines": [{"line": 0, "quantity": 1}]},
        headers=dispense_headers(world),
    )
    assert dispensed.status_code == 201, dispensed.text
    text = (await client.get("/metrics")).text
    # Every route is labelled by its template, the plain Starlette hot routes included.
    for method, template, status in (
        ("POST", "/v1/prescriptions", 201),
        ("POST", "/v1/scan", 200),
        ("POST", "/v1/prescriptions/{id}/dispensations", 201),
    ):
        assert (
            f'ordonum_http_requests_total{{method="{method}",route="{template}",'
            f'status="{status}"}} 1' in text
        )
    assert "unmatched" not in text
    assert 'ordonum_http_request_duration_seconds_count{method="GET",route="/healthz"} 2' in text
    if services.backend.kind == "embedded":
        assert "ordonum_store_prescriptions 1" in text
    else:
        assert "ordonum_store_pool_size " in text


async def test_rate_limit(client: httpx.AsyncClient, world: World, services: Services) -> None:
    services.limiter.rate, services.limiter.burst = 1.0, 3.0
    codes = [
        (await client.get("/v1/me/prescriptions", headers=world.patient_h)).status_code
        for _ in range(5)
    ]
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]
    reply = await client.get("/v1/me/prescriptions", headers=world.patient_h)
    assert int(reply.headers["retry-after"]) >= 1
