"""Everything a request handler needs, opened once per process (see ``app.lifespan``)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ordonum import IdGenerator, Store, issue_token
from ordonum.service.auth import JwksKeys, TokenVerifier
from ordonum.service.keys import QrKeys, ensure_keys, load_qr_keys
from ordonum.service.ratelimit import Lockout, RateLimiter
from ordonum.service.settings import Settings
from ordonum.service.vault import TokenVault

__all__ = ["DUMMY_NODE", "Services"]

log = logging.getLogger("ordonum.service")
# IDs of this node are never issued: the scan paths look one up when they already know the
# answer is 404, so that every 404 costs the same store work.
DUMMY_NODE = 4_194_303  # MAX_NODE


@dataclass
class Services:
    settings: Settings
    store: Store
    qr: QrKeys
    verifier: TokenVerifier
    vault: TokenVault
    ids: IdGenerator
    limiter: RateLimiter
    lockout: Lockout
    executor: ThreadPoolExecutor
    dummy_id: str
    dummy_code: str

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Create missing keys, open the store, load the keys. Close with :meth:`close`."""
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
        settings.store_dir.mkdir(parents=True, exist_ok=True)
        store = Store.open(settings.store_dir, sync=settings.sync)
        try:
            vault = TokenVault(Path(settings.data_dir) / "qr-tokens.sqlite3")
        except BaseException:
            store.close()
            raise
        dummy_id = IdGenerator(DUMMY_NODE).new()
        services = cls(
            settings=settings,
            store=store,
            qr=qr,
            verifier=verifier,
            vault=vault,
            ids=IdGenerator(settings.node),
            limiter=RateLimiter(settings.rate, settings.burst),
            lockout=Lockout(
                settings.lockout_failures, settings.lockout_window, settings.lockout_seconds
            ),
            executor=ThreadPoolExecutor(settings.write_threads, thread_name_prefix="ordonum-w"),
            dummy_id=dummy_id,
            dummy_code=issue_token(qr.signing, dummy_id).access_code,
        )
        log.info(
            "store opened",
            extra={
                "path": str(settings.store_dir),
                "prescriptions": len(store),
                "kid": qr.signing.kid,
            },
        )
        return services

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.vault.close()
        self.store.close()
        log.info("store closed")
