"""ordonum: the open core of the French e-prescription flow (ordonnance numérique).

Prescription identifiers with a check character, validators for the health identifiers a
prescription carries, signed QR tokens, and a durable prescription store; the HTTP service
lives in :mod:`ordonum.service`.
"""

from ordonum._core import (
    ID_EPOCH_UNIX_MS,
    MAX_NODE,
    IdGenerator,
    InvalidId,
    RxId,
    __version__,
    is_valid_id,
    parse_id,
    validate_ids,
)

__all__ = [
    "ID_EPOCH_UNIX_MS",
    "MAX_NODE",
    "IdGenerator",
    "InvalidId",
    "RxId",
    "__version__",
    "is_valid_id",
    "parse_id",
    "validate_ids",
]
