"""The one seam between the HTTP routes and where prescriptions live.

:class:`Backend` lists what the routes need, all ``async``; two implementations:

* :class:`EmbeddedBackend` (the default): the Rust :class:`ordonum.Store` in the data
  directory plus the QR token vault beside it, one process. Calls that wait for the
  journal's fdatasync run in the service's sized thread pool, never on the event loop.
* :class:`ordonum.service.pg.PostgresBackend` (``--store postgresql://...``): PostgreSQL
  as the system of record, shared by any number of service processes.

Both take and return the same things: records as dicts (the store's contract, lines
numbered from 0 like the HTTP API), documents as JSON ``bytes`` of the same shape, and the
same exceptions (:class:`~ordonum.NotFound`, :class:`~ordonum.Conflict`,
:class:`~ordonum.InvalidRecord`, :class:`~ordonum.StoreFailed`), so the routes and the API
tests do not know which one is behind them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import orjson

from ordonum import Store
from ordonum.service.lines import LineNumbers
from ordonum.service.ratelimit import Lockout
from ordonum.service.vault import TokenVault

__all__ = ["Backend", "EmbeddedBackend"]

T = TypeVar("T")


class Backend(Protocol):
    """What the routes call. Times are Unix ms (``None``: now); IDs in any accepted form."""

    kind: str
    """``"embedded"`` or ``"postgresql"``."""
    node: int
    """The ID generator node this process issues IDs with."""

    async def create(self, record: dict[str, Any], token: str, *, now_ms: int) -> bytes:
        """Create durably (the prescription and its QR token text); its document."""
        ...

    async def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes: ...

    async def get_many(
        self, rx_ids: list[str], *, now_ms: int | None = None
    ) -> list[bytes | None]: ...

    async def scan(
        self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None
    ) -> bytes:
        """Check the code, log the access durably, return the document (NotFound on a
        wrong ID or code alike)."""
        ...

    async def dispense(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        """All lines or none; the answer once durable. Same key + same request: the first
        answer with ``"replayed": true``; same key, other request, or over-dispensing:
        Conflict."""
        ...

    async def cancel(
        self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None
    ) -> str: ...

    async def set_consent(
        self, rx_id: str, allowed: bool, *, now_ms: int | None = None
    ) -> None: ...

    async def owner(self, rx_id: str) -> tuple[str, str, bool]:
        """``(prescriber_rpps, patient_nir, consent)``."""
        ...

    async def dispensations(self, rx_id: str) -> bytes: ...

    async def by_patient(
        self, nir: str, *, limit: int = 50, before: str | None = None
    ) -> list[str]: ...

    async def access_log(self, rx_id: str) -> bytes: ...

    async def token(self, rx_id: str) -> str | None:
        """The prescription's QR token text, if this service created it."""
        ...

    async def count(self) -> int:
        """Prescriptions held (PostgreSQL: the planner's estimate)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for /metrics (cheap, no I/O)."""
        ...

    async def lockout_retry_after(self, key: str) -> int:
        """Manual entry of ``key`` (an ID text): 0 if open, else seconds until it reopens."""
        ...

    async def lockout_failed(self, key: str) -> None: ...

    async def lockout_succeeded(self, key: str) -> None: ...

    async def close(self) -> None: ...


class EmbeddedBackend:
    """The Rust store + the SQLite token vault, in this process (see the module doc)."""

    kind = "embedded"

    def __init__(
        self,
        store: Store,
        vault: TokenVault,
        executor: ThreadPoolExecutor,
        lockout: Lockout,
        lines: LineNumbers,
        node: int,
    ) -> None:
        self.store = store
        self.vault = vault
        self.executor = executor
        self.lockout = lockout
        self.lines = lines
        self.node = node

    async def _blocking(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def _create(self, record: dict[str, Any], token: str, now_ms: int) -> bytes:
        rx_id = record["id"]
        self.vault.put(rx_id, token)
        return self.store.create(orjson.dumps(self._to_store(record)), now_ms=now_ms)

    def _to_store(self, record: dict[str, Any]) -> dict[str, Any]:
        return record

    async def create(self, record: dict[str, Any], token: str, *, now_ms: int) -> bytes:
        return self.lines.document(await self._blocking(self._create, record, token, now_ms))

    async def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes:
        return self.lines.document(self.store.get(rx_id, now_ms=now_ms))

    async def get_many(self, rx_ids: list[str], *, now_ms: int | None = None) -> list[bytes | None]:
        docs = self.store.get_many(rx_ids, now_ms=now_ms)
        return [None if d is None else self.lines.document(d) for d in docs]

    async def scan(
        self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None
    ) -> bytes:
        # The store logs the access durably (it waits for the journal): a worker thread.
        doc = await self._blocking(self.store.scan, rx_id, access_code, actor=actor, now_ms=now_ms)
        return self.lines.document(doc)

    async def dispense(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        shifted = {
            **record,
            "lines": [
                {**line, "line": self.lines.to_store(line["line"])}
                if isinstance(line, dict) and isinstance(line.get("line"), int)
                else line
                for line in record.get("lines", [])
            ],
        }
        out = await self._blocking(
            self.store.dispense,
            rx_id,
            orjson.dumps(shifted),
            idempotency_key=idempotency_key,
            access_code=access_code,
            now_ms=now_ms,
        )
        return self.lines.document(out)

    async def cancel(self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None) -> str:
        return await self._blocking(
            self.store.cancel, rx_id, prescriber_rpps=prescriber_rpps, now_ms=now_ms
        )

    async def set_consent(self, rx_id: str, allowed: bool, *, now_ms: int | None = None) -> None:
        await self._blocking(self.store.set_consent, rx_id, allowed, now_ms=now_ms)

    async def owner(self, rx_id: str) -> tuple[str, str, bool]:
        return self.store.owner(rx_id)

    async def dispensations(self, rx_id: str) -> bytes:
        return self.lines.document(self.store.dispensations(rx_id))

    async def by_patient(
        self, nir: str, *, limit: int = 50, before: str | None = None
    ) -> list[str]:
        return self.store.by_patient(nir, limit=limit, before=before)

    async def access_log(self, rx_id: str) -> bytes:
        return self.store.access_log(rx_id)

    async def token(self, rx_id: str) -> str | None:
        return await self._blocking(self.vault.get, rx_id)

    async def count(self) -> int:
        return len(self.store)

    def stats(self) -> dict[str, int]:
        return self.store.stats()

    async def lockout_retry_after(self, key: str) -> int:
        return self.lockout.retry_after(key)

    async def lockout_failed(self, key: str) -> None:
        self.lockout.failed(key)

    async def lockout_succeeded(self, key: str) -> None:
        self.lockout.succeeded(key)

    async def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.vault.close()
        self.store.close()
