"""Settings come from ORDONUM_* variables; a value that does not parse names its variable."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from ordonum.service.app import GC_YOUNG, create_app
from ordonum.service.settings import Settings


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.sync, s.otel, s.access_log, s.auth_cache) == ("always", False, True, 100_000)


def test_every_kind_of_value_parses() -> None:
    s = Settings.from_env(
        {
            "ORDONUM_DATA": "/srv/ordonum",
            "ORDONUM_PORT": "9001",
            "ORDONUM_RATE": "12.5",
            "ORDONUM_JWKS_URL": "https://idp.example/jwks",
            "ORDONUM_ACCESS_LOG": "off",
            "ORDONUM_OTEL": "true",
            "ORDONUM_SYNC": "delay",
        }
    )
    assert s.data_dir == Path("/srv/ordonum")
    assert s.store_dir == Path("/srv/ordonum/store")
    assert (s.port, s.rate, s.jwks_url) == (9001, 12.5, "https://idp.example/jwks")
    assert (s.access_log, s.otel, s.sync) == (False, True, "delay")


def test_overrides_win_over_environment_and_none_is_ignored() -> None:
    s = Settings.from_env({"ORDONUM_PORT": "9001"}, port=9002, host=None)
    assert (s.port, s.host) == (9002, "127.0.0.1")


@pytest.mark.parametrize(
    ("var", "text", "message"),
    [
        ("ORDONUM_PORT", "eighty", "ORDONUM_PORT='eighty': invalid literal for int()"),
        ("ORDONUM_OTEL", "maybe", "ORDONUM_OTEL='maybe': expected a boolean"),
        ("ORDONUM_RATE", "fast", "ORDONUM_RATE='fast': could not convert string to float"),
    ],
)
def test_a_bad_value_names_its_variable(var: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({var: text})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sync": "sometimes"}, "ORDONUM_SYNC must be 'always' or 'delay', got 'sometimes'"),
        ({"write_threads": 0}, "write_threads must be positive, got 0"),
        ({"rate": 0.0}, "rate must be positive, got 0.0"),
        ({"max_queue_ms": -1.0}, "max_queue_ms must be 0 or more, got -1.0"),
        ({"max_queue_ms": float("nan")}, "max_queue_ms must be 0 or more, got nan"),
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message + "$"):
        Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("otel", [False, True])
def test_fastapi_native_telemetry_follows_the_switch(otel: bool) -> None:
    app = create_app(Settings(otel=otel))
    config = app._telemetry
    assert (config["tracing"], config["metrics"], config["logs"]) == (otel, otel, otel)


@pytest.mark.anyio
async def test_startup_freezes_what_lives_as_long_as_the_process(tmp_path: Path) -> None:
    """The objects made at start-up leave the cyclic GC's generations (gc.freeze), so a full
    collection under load does not walk them; the youngest generation is collected less
    often (GC_YOUNG allocations)."""
    app = create_app(Settings(data_dir=tmp_path / "data", access_log=False))
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        running = asyncio.create_task(app(scope, inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (GC_YOUNG, *threshold[1:])
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await running
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
