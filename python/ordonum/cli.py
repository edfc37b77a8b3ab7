"""The ``ordonum`` command (also ``python -m ordonum``): run the service and work with its data.

Every command takes ``--data DIR`` (default ``$ORDONUM_DATA`` or ``./var``) and has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data directory (default: $ORDONUM_DATA or ./var)",
    )


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from ordonum.service.settings import Settings

    return Settings.from_env(data_dir=args.data, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from ordonum.service import create_app
    from ordonum.service.keys import ensure_keys
    from ordonum.service.middleware import configure_logging
    from ordonum.service.protocol import CoalescingProtocol

    settings = _settings(
        args, host=args.host, port=args.port, store=args.store, workers=args.workers
    )
    configure_logging(settings.log_level)
    ensure_keys(settings.keys_dir)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        # uvloop + httptools, each response in one write (see ordonum.service.protocol)
        "http": CoalescingProtocol,
        # No X-Forwarded-* rewriting: nothing here reads the client address, and the
        # middleware cost ~1 % of the server's CPU at the national burst.
        "proxy_headers": False,
        "log_config": None,
        "access_log": False,
        "log_level": settings.log_level.lower(),
        "server_header": False,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return 0
    # Several processes (PostgreSQL only, Settings checks it): uvicorn starts each worker
    # from the app factory, which reads the settings from the environment: pass the flags
    # on that way. Each worker opens its own pool and leases its own ID node.
    os.environ.update(
        {
            "ORDONUM_DATA": str(settings.data_dir),
            "ORDONUM_HOST": settings.host,
            "ORDONUM_PORT": str(settings.port),
            "ORDONUM_STORE": settings.store,
            "ORDONUM_WORKERS": str(settings.workers),
        }
    )
    uvicorn.run("ordonum.service.app:create_app", factory=True, workers=settings.workers, **common)
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from ordonum.service.keys import new_qr_key

    settings = _settings(args)
    key = new_qr_key(settings.keys_dir, args.kid)
    print(f"QR signing key {key.kid} created and active in {settings.keys_dir}", file=sys.stderr)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from ordonum.service.devidp import claims_for, mint_token
    from ordonum.service.keys import ensure_keys, load_idp_key

    settings = _settings(args)
    ensure_keys(settings.keys_dir)
    claims = claims_for(
        args.role,
        args.id,
        rpps=args.rpps,
        ttl=args.ttl,
        audience=settings.audience,
        issuer=settings.issuer or None,
    )
    print(mint_token(load_idp_key(settings.keys_dir), claims))
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    from ordonum import qr
    from ordonum.service.models import CreateIn

    body = CreateIn.model_validate_json(Path(args.file).read_bytes())
    if args.url:
        import httpx

        if not args.bearer:
            print("--url needs --bearer TOKEN (see `ordonum token`)", file=sys.stderr)
            return 2
        reply = httpx.post(
            args.url.rstrip("/") + "/v1/prescriptions",
            content=body.model_dump_json(),
            headers={"Authorization": f"Bearer {args.bearer}", "Content-Type": "application/json"},
            timeout=30,
        )
        if reply.status_code != 201:
            print(reply.text, file=sys.stderr)
            return 1
        out: dict[str, Any] = reply.json()
    else:
        from ordonum import IdGenerator, Store
        from ordonum.service.create import create_prescription
        from ordonum.service.keys import ensure_keys, load_qr_keys

        if not args.rpps:
            print("without --url, give the prescriber's --rpps", file=sys.stderr)
            return 2
        from ordonum import checks

        settings = _settings(args)
        if settings.is_postgresql:
            print(
                "without --url, issue writes to the embedded store; ORDONUM_STORE names"
                " PostgreSQL: create through the service with --url",
                file=sys.stderr,
            )
            return 2
        ensure_keys(settings.keys_dir)
        keys = load_qr_keys(settings.keys_dir)
        settings.store_dir.mkdir(parents=True, exist_ok=True)
        store = Store.open(settings.store_dir)
        try:
            out = create_prescription(
                store,
                keys.signing,
                IdGenerator(settings.node),
                checks.validate_rpps(args.rpps),
                body,
            )
        finally:
            store.close()
    png = Path(args.qr or f"{out['id']}.png")
    png.write_bytes(qr.png(out["token"]))
    print(json.dumps(out, indent=2))
    print(f"QR code written to {png}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ordonum import InvalidToken, diagnose_token, verify_token
    from ordonum.service.keys import load_qr_keys

    settings = _settings(args)
    keys = load_qr_keys(settings.keys_dir)
    try:
        token = verify_token(args.token, keys.keyring)
    except InvalidToken:
        print(f"invalid: {diagnose_token(args.token, keys.keyring)}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "id": token.id,
                "access_code": token.access_code,
                "kid": token.kid,
                "issued_at": token.issued_at.isoformat(),
            },
            indent=2,
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ordonum.service.demo import load_demo

    settings = _settings(args, store=args.store)
    load_demo(settings, args.count, tokens_out=args.tokens, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordonum", description="ordonum: the e-prescription service and its tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument(
        "--store",
        default=None,
        help="postgresql://user@host:port/db to keep prescriptions in PostgreSQL (default:"
        " $ORDONUM_STORE, or the embedded store in DATA/store)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="service processes (default 1; more than 1 needs --store postgresql://...)",
    )
    _data_arg(serve)
    serve.set_defaults(func=cmd_serve)

    keys = commands.add_parser("keys", help="manage the QR signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    keys_new = keys_commands.add_parser(
        "new", help="create a QR signing key and make it active (old ones stay trusted)"
    )
    keys_new.add_argument("--kid", required=True, help="key id: 4 characters [A-Z0-9], e.g. FR02")
    _data_arg(keys_new)
    keys_new.set_defaults(func=cmd_keys_new)

    token = commands.add_parser(
        "token", help="print a development bearer token signed by the dev identity provider"
    )
    token.add_argument("--role", required=True, choices=["prescriber", "pharmacist", "patient"])
    token.add_argument(
        "--id",
        required=True,
        help="prescriber: RPPS; pharmacist: the pharmacy's FINESS; patient: NIR",
    )
    token.add_argument("--rpps", help="the pharmacist's RPPS (pharmacist tokens)")
    token.add_argument(
        "--ttl", type=float, default=3600, help="lifetime in seconds; negative: already expired"
    )
    _data_arg(token)
    token.set_defaults(func=cmd_token)

    issue = commands.add_parser(
        "issue", help="create a prescription from a JSON file (the API body); write its QR PNG"
    )
    issue.add_argument("file", help="JSON body of POST /v1/prescriptions")
    issue.add_argument("--url", help="create through the running service at this base URL")
    issue.add_argument("--bearer", help="prescriber bearer token (with --url)")
    issue.add_argument("--rpps", help="prescriber RPPS (without --url: directly in the store)")
    issue.add_argument("--qr", help="PNG output path (default: ID.png)")
    _data_arg(issue)
    issue.set_defaults(func=cmd_issue)

    verify = commands.add_parser("verify", help="check a QR token offline with the keys in DATA")
    verify.add_argument("token", help="the token text, RX1:...")
    _data_arg(verify)
    verify.set_defaults(func=cmd_verify)

    demo = commands.add_parser(
        "demo", help="load N synthetic valid prescriptions (real medicines) into the store"
    )
    demo.add_argument("--count", type=int, required=True, help="how many prescriptions")
    demo.add_argument("--tokens", type=Path, help="also write ID<TAB>token lines to this file")
    demo.add_argument("--seed", type=int, default=None, help="random seed (reproducible data)")
    demo.add_argument(
        "--store",
        default=None,
        help="postgresql://... to load PostgreSQL (default: $ORDONUM_STORE, or the embedded"
        " store in DATA/store)",
    )
    _data_arg(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ValueError, OSError) as exc:
        print(f"ordonum {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
