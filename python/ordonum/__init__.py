"""ordonum: the open core of the French e-prescription flow (ordonnance numérique).

Prescription identifiers with a check character, validators for the health identifiers a
prescription carries (:mod:`ordonum.checks`), signed QR tokens (:mod:`ordonum.qr` draws
them), and a durable prescription store; the HTTP service lives in :mod:`ordonum.service`.
"""

# token: from ordonum._core import ...
from ordonum._core import (
    ID_EPOCH_UNIX_MS,
    MAX_NODE,
    Conflict,
    IdGenerator,
    InvalidId,
    InvalidIdentifier,
    InvalidRecord,
    InvalidToken,
    NotFound,
    RxId,
    Store,  # store
    StoreFailed,
    __version__,
    is_valid_id,
    parse_id,
    validate_ids,
)

# token:
# isort: split
from ordonum import qr
from ordonum._core import (
    KeyRing,
    SigningKey,
    Token,
    TokenCache,
    VerifyingKey,
    diagnose_token,
    diagnose_token_at,
    issue_token,
    issue_token_at,
    issue_tokens,
    issue_tokens_at,
    parse_access_code,
    verify_token,
    verify_token_at,
    verify_tokens,
    verify_tokens_at,
)

__all__ = [  # noqa: RUF022 (grouped by feature, sorted within each group)
    "ID_EPOCH_UNIX_MS",
    "MAX_NODE",
    "Conflict",
    "IdGenerator",
    "InvalidId",
    "InvalidIdentifier",
    "InvalidRecord",
    "InvalidToken",
    "NotFound",
    "RxId",
    "Store",
    "StoreFailed",
    "__version__",
    "is_valid_id",
    "parse_id",
    "validate_ids",
    # token: names
    "KeyRing",
    "SigningKey",
    "Token",
    "TokenCache",
    "VerifyingKey",
    "diagnose_token",
    "diagnose_token_at",
    "issue_token",
    "issue_token_at",
    "issue_tokens",
    "issue_tokens_at",
    "parse_access_code",
    "qr",
    "verify_token",
    "verify_token_at",
    "verify_tokens",
    "verify_tokens_at",
    #
    # store: names
]
