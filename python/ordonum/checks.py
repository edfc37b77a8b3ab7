"""Check characters and the identifiers a prescription carries.

Primitives, each as ``X(body) -> check`` and ``is_valid_X(number) -> bool`` (exact: no
separators, no case folding): :func:`mod11_2`, :func:`mod37_2`, :func:`mod97_10`,
:func:`mod37_36` (ISO/IEC 7064), :func:`luhn`, :func:`ean13`.

Identifiers, each as ``is_valid_X(text) -> bool``, ``validate_X(text) -> str`` (the compact
form, or :class:`ordonum.InvalidIdentifier` with a message saying what is wrong and where) and
``are_valid_X(texts) -> list[bool]`` for batches: ``nir`` (French patient number), ``rpps``
(health professional), ``finess`` (establishment), ``cip13`` (medicine pack; the ``34009``
prefix is enforced), ``erezept_id`` (Germany's E-Rezept) and ``eps_id`` (NHS England EPS).
Every function raises ``TypeError`` for a non-``str`` argument.

>>> from ordonum import checks
>>> checks.validate_nir("2 95 10 99 126 111 93")
'295109912611193'
>>> checks.is_valid_cip13("3400949497294")
True
>>> checks.mod37_2("G123489654321")
'Y'
"""

from ordonum._core import (
    CIP13_PREFIX,
    InvalidIdentifier,
    are_valid_cip13,
    are_valid_eps_id,
    are_valid_erezept_id,
    are_valid_finess,
    are_valid_nir,
    are_valid_rpps,
    ean13,
    is_valid_cip13,
    is_valid_ean13,
    is_valid_eps_id,
    is_valid_erezept_id,
    is_valid_finess,
    is_valid_luhn,
    is_valid_mod11_2,
    is_valid_mod37_2,
    is_valid_mod37_36,
    is_valid_mod97_10,
    is_valid_nir,
    is_valid_rpps,
    luhn,
    mod11_2,
    mod37_2,
    mod37_36,
    mod97_10,
    validate_cip13,
    validate_eps_id,
    validate_erezept_id,
    validate_finess,
    validate_nir,
    validate_rpps,
)

__all__ = [
    "CIP13_PREFIX",
    "InvalidIdentifier",
    "are_valid_cip13",
    "are_valid_eps_id",
    "are_valid_erezept_id",
    "are_valid_finess",
    "are_valid_nir",
    "are_valid_rpps",
    "ean13",
    "is_valid_cip13",
    "is_valid_ean13",
    "is_valid_eps_id",
    "is_valid_erezept_id",
    "is_valid_finess",
    "is_valid_luhn",
    "is_valid_mod11_2",
    "is_valid_mod37_2",
    "is_valid_mod37_36",
    "is_valid_mod97_10",
    "is_valid_nir",
    "is_valid_rpps",
    "luhn",
    "mod11_2",
    "mod37_2",
    "mod37_36",
    "mod97_10",
    "validate_cip13",
    "validate_eps_id",
    "validate_erezept_id",
    "validate_finess",
    "validate_nir",
    "validate_rpps",
]
