"""Everything a request handler needs, opened once per process (see ``app.lifespan``)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ordonum import IdGenerator, Store, issue_token
from ordonum.service.auth import JwksKeys, TokenVerifier
from ordonum.service.backend import Backend, EmbeddedBackend
from ordonum.service.keys import QrKeys, ensure_keys, load_qr_keys
from ordonum.service.ratelimit import Lockout, RateLimiter
from ordonum.service.settings import Settings
from ordonum.service.vault import TokenVault

__all__ = ["DUMMY_NODE", "Services", "open_backend"]

log = logging.getLogger("ordonum.service")
# IDs of this node are never issued: the scan paths look one up when they already know the
# answer is 404, so that every 404 costs the same store work.
DUMMY_NODE = 4_194_303  # MAX_NODE


async def open_backend(settings: Settings) -> Backend:
    """The backend ``settings.store`` names: PostgreSQL for a ``postgresql://`` URL, else
    the embedded store in ``settings.store_dir``."""
    if settings.is_postgresql:
        from ordonum.service.pg import PostgresBackend

        return await PostgresBackend.open(
            settings.store,
            min_size=min(2, settings.pg_pool),
            max_size=settings.pg_pool,
            lockout_failures=settings.lockout_failures,
            lockout_window=settings.lockout_window,
            lockout_seconds=settings.lockout_seconds,
        )
    settings.store_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(settings.store_dir, sync=settings.sync)
    try:
        legacy = TokenVault.open_if_present(settings.data_dir)
    except BaseException:
        store.close()
        raise
    return EmbeddedBackend(
        store,
        ThreadPoolExecutor(settings.write_threads, thread_name_prefix="ordonum-w"),
        Lockout(settings.lockout_failures, settings.lockout_window, settings.lockout_seconds),
        node=settings.node,
        legacy=legacy,
    )


@dataclass
class Services:
    settings: Settings
    backend: Backend
    qr: QrKeys
    verifier: TokenVerifier
    ids: IdGenerator
    limiter: RateLimiter
    dummy_id: str
    dummy_code: str

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        """Create missing keys, open the backend, load the keys. Close with :meth:`close`."""
        if settings.node == DUMMY_NODE:
            raise ValueError(f"ORDONUM_NODE {DUMMY_NODE} is reserved")
        keys_dir = settings.keys_dir
        for path in ensure_keys(keys_dir):
            log.info("created on first run", extra={"path": str(path)})
        qr = load_qr_keys(keys_dir, max_age=settings.token_max_age or None)
        if settings.jwks_url:
            jwks = JwksKeys(url=settings.jwks_url)
        else:
            jwks = JwksKeys(file=settings.jwks_path)
        verifier = TokenVerifier(
            jwks,
            audience=settings.audience,
            issuer=settings.issuer or None,
            cache_size=settings.auth_cache,
        )
        backend = await open_backend(settings)
        dummy_id = IdGenerator(DUMMY_NODE).new()
        services = cls(
            settings=settings,
            backend=backend,
            qr=qr,
            verifier=verifier,
            ids=IdGenerator(backend.node),
            limiter=RateLimiter(settings.rate, settings.burst),
            dummy_id=dummy_id,
            dummy_code=issue_token(qr.signing, dummy_id).access_code,
        )
        log.info(
            "store opened",
            extra={
                "store": backend.kind,
                "path": settings.store_label,
                "node": backend.node,
                "kid": qr.signing.kid,
            },
        )
        return services

    async def close(self) -> None:
        await self.backend.close()
        log.info("store closed")
