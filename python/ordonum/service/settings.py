"""Service settings: one frozen dataclass, read once from ``ORDONUM_*`` environment variables.

=============================  ==========================================  ====================
variable                       meaning                                     default
=============================  ==========================================  ====================
``ORDONUM_DATA``               data directory (``store/``, ``keys/``,      ``./var``
                               and ``qr-tokens.sqlite3``)
``ORDONUM_HOST``               address ``ordonum serve`` binds             ``127.0.0.1``
``ORDONUM_PORT``               port ``ordonum serve`` binds                ``8000``
``ORDONUM_JWKS_FILE``          identity provider's public keys (JWKS)      ``DATA/keys/``
                                                                           ``idp.jwks.json``
``ORDONUM_JWKS_URL``           the same, fetched over HTTP(S); wins over   unset
                               the file when set
``ORDONUM_AUDIENCE``           required ``aud`` of bearer tokens           ``ordonum``
``ORDONUM_ISSUER``             required ``iss`` (empty: not checked)       ``ordonum-dev-idp``
``ORDONUM_RATE``               requests per second per identity            ``200``
``ORDONUM_BURST``              token-bucket size per identity              ``400``
``ORDONUM_LOCKOUT_FAILURES``   wrong access codes for one ID that lock     ``5``
                               its manual entry ...
``ORDONUM_LOCKOUT_WINDOW``     ... within this many seconds ...            ``60``
``ORDONUM_LOCKOUT_SECONDS``    ... for this many seconds                   ``300``
``ORDONUM_MAX_BODY``           largest request body in bytes (413 above)   ``65536``
``ORDONUM_MAX_QUEUE_MS``       overload: a request that waited longer      ``1000``
                               than this between its headers being
                               parsed and being served gets 503 +
                               Retry-After at once
                               (0: never shed)
``ORDONUM_TOKEN_MAX_AGE``      largest age of a QR token in seconds        ``0`` (no limit:
                               (0: only the prescription's validity)       validity decides)
``ORDONUM_SYNC``               store durability: ``always`` or ``delay``   ``always``
``ORDONUM_WRITE_THREADS``      worker threads for durable writes           ``64``
``ORDONUM_NODE``               ID generator node number (unique per        ``1``
                               issuing process; embedded store only: with
                               PostgreSQL each process leases its own)
``ORDONUM_STORE``              where prescriptions live: a                 empty: the embedded
                               ``postgresql://`` URL, or empty for the     store in
                               embedded store                              ``DATA/store``
``ORDONUM_WORKERS``            service processes (``ordonum serve``);      ``1``
                               more than 1 needs PostgreSQL
``ORDONUM_PG_POOL``            PostgreSQL connections per pool (max); a    ``20``
                               process has two: writes, and reads + scans
``ORDONUM_AUTH_CACHE``         verified bearer tokens kept (until exp)     ``100000``
``ORDONUM_LOG_LEVEL``          ``debug``, ``info``, ``warning``, ...       ``info``
``ORDONUM_ACCESS_LOG``         one JSON log line per request (``0``/``1``) ``1``
``ORDONUM_OTEL``               FastAPI's native OpenTelemetry spans,       ``0``
                               metrics and logs (``0``/``1``; needs an
                               OpenTelemetry SDK configured)
=============================  ==========================================  ====================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["Settings"]


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {text!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment; see the module docstring."""

    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    jwks_file: Path | None = None
    jwks_url: str | None = None
    audience: str = "ordonum"
    issuer: str = "ordonum-dev-idp"
    rate: float = 200.0
    burst: int = 400
    lockout_failures: int = 5
    lockout_window: float = 60.0
    lockout_seconds: float = 300.0
    max_body: int = 65536
    max_queue_ms: float = 1000.0
    token_max_age: float = 0.0
    sync: str = "always"
    write_threads: int = 64
    node: int = 1
    store: str = ""
    workers: int = 1
    pg_pool: int = 20
    auth_cache: int = 100_000
    log_level: str = "info"
    access_log: bool = True
    otel: bool = False

    def __post_init__(self) -> None:
        if self.sync not in {"always", "delay"}:
            raise ValueError(f"ORDONUM_SYNC must be 'always' or 'delay', got {self.sync!r}")
        if self.store and not self.is_postgresql:
            raise ValueError(
                f"ORDONUM_STORE must be a postgresql:// URL (or empty for the embedded store),"
                f" got {self.store_label!r}"
            )
        if self.workers > 1 and not self.is_postgresql:
            raise ValueError(
                f"--workers {self.workers} needs --store postgresql://...: the embedded store"
                " belongs to one process (it locks its directory)"
            )
        for name in (
            "port",
            "burst",
            "lockout_failures",
            "max_body",
            "write_threads",
            "workers",
            "pg_pool",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate!r}")
        if not self.max_queue_ms >= 0:  # also refuses NaN
            raise ValueError(f"max_queue_ms must be 0 or more, got {self.max_queue_ms!r}")

    @property
    def is_postgresql(self) -> bool:
        return self.store.startswith(("postgresql://", "postgres://"))

    @property
    def store_label(self) -> str:
        """The store for logs and errors: the directory, or the URL without its password."""
        if not self.store:
            return str(self.store_dir)
        scheme, sep, rest = self.store.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        return f"{scheme}{sep}{userinfo}{at}{host}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def jwks_path(self) -> Path:
        """The JWKS file trusted when no URL is configured."""
        return self.jwks_file if self.jwks_file is not None else self.keys_dir / "idp.jwks.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ORDONUM_*`` variables, then ``overrides`` (e.g. CLI flags).

        Raises ``ValueError`` naming the variable whose value does not parse.
        """
        env = os.environ if environ is None else environ
        names = {
            "data_dir": "ORDONUM_DATA",
            "host": "ORDONUM_HOST",
            "port": "ORDONUM_PORT",
            "jwks_file": "ORDONUM_JWKS_FILE",
            "jwks_url": "ORDONUM_JWKS_URL",
            "audience": "ORDONUM_AUDIENCE",
            "issuer": "ORDONUM_ISSUER",
            "rate": "ORDONUM_RATE",
            "burst": "ORDONUM_BURST",
            "lockout_failures": "ORDONUM_LOCKOUT_FAILURES",
            "lockout_window": "ORDONUM_LOCKOUT_WINDOW",
            "lockout_seconds": "ORDONUM_LOCKOUT_SECONDS",
            "max_body": "ORDONUM_MAX_BODY",
            "max_queue_ms": "ORDONUM_MAX_QUEUE_MS",
            "token_max_age": "ORDONUM_TOKEN_MAX_AGE",
            "sync": "ORDONUM_SYNC",
            "write_threads": "ORDONUM_WRITE_THREADS",
            "node": "ORDONUM_NODE",
            "store": "ORDONUM_STORE",
            "workers": "ORDONUM_WORKERS",
            "pg_pool": "ORDONUM_PG_POOL",
            "auth_cache": "ORDONUM_AUTH_CACHE",
            "log_level": "ORDONUM_LOG_LEVEL",
            "access_log": "ORDONUM_ACCESS_LOG",
            "otel": "ORDONUM_OTEL",
        }
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, var in names.items():
            text = env.get(var)
            if text is None:
                continue
            kind = str(kinds[name])
            try:
                if "Path" in kind:
                    values[name] = Path(text) if text else None
                elif kind == "int":
                    values[name] = int(text)
                elif kind == "float":
                    values[name] = float(text)
                elif kind == "bool":
                    values[name] = _bool(text)
                elif "None" in kind:
                    values[name] = text or None
                else:
                    values[name] = text
            except ValueError as exc:
                raise ValueError(f"{var}={text!r}: {exc}") from None
        settings = cls(**values)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given) if given else settings
