"""The Rust extension module. Import from :mod:`ordonum`, not from here."""

from datetime import datetime
from typing import Final, final

__version__: Final[str]

# --- errors -----------------------------------------------------------------

class InvalidId(ValueError):
    """Text that is not a valid prescription ID (the message says what is wrong and where)."""

class InvalidIdentifier(ValueError):
    """A health identifier (NIR, RPPS, FINESS, CIP13, ...) that fails its format or check key."""

class InvalidToken(ValueError):
    """A QR token that does not verify. Deliberately opaque: the reason is for diagnose_token."""

class NotFound(LookupError):
    """No such prescription."""

class Conflict(Exception):
    """The prescription's state forbids the operation (over-dispensing, cancelled, ...)."""

class InvalidRecord(ValueError):
    """A record given to the store is malformed; the message names the field at fault."""

class StoreFailed(OSError):
    """The store's journal hit an I/O or fsync error; the store refuses writes from then on."""

# --- identifiers (rust/src/id.rs) --------------------------------------------

ID_EPOCH_UNIX_MS: Final[int]
"""Unix time in ms of the ID epoch, 2020-01-01T00:00:00Z."""
MAX_NODE: Final[int]
"""Largest node number, 2**22 - 1."""

@final
class IdGenerator:
    """Makes prescription IDs for one issuer node; thread-safe and strictly increasing.

    Raises ``ValueError`` if ``node`` is outside ``0..=MAX_NODE``.
    """

    def __new__(cls, node: int) -> IdGenerator: ...
    @property
    def node(self) -> int:
        """The issuer node number baked into every ID."""

    def new(self) -> str:
        """A new ID in canonical text, ``XXXX-XXXX-XXXX-XXXX-C``."""

    def new_batch(self, n: int) -> list[str]:
        """``n`` new IDs in increasing order, reserved with one atomic operation."""

@final
class RxId:
    """A parsed prescription ID. Ordered like creation order; hashable."""

    @property
    def text(self) -> str:
        """Canonical grouped text, ``XXXX-XXXX-XXXX-XXXX-C``."""

    @property
    def compact(self) -> str:
        """The 17 characters without hyphens."""

    @property
    def node(self) -> int:
        """Issuer node number."""

    @property
    def timestamp_ms(self) -> int:
        """Milliseconds since the ID epoch (:data:`ID_EPOCH_UNIX_MS`)."""

    @property
    def sequence(self) -> int:
        """Sequence number within the millisecond."""

    @property
    def created_at(self) -> datetime:
        """Creation time as an aware UTC ``datetime``."""

    @property
    def bytes(self) -> bytes:
        """The 10-byte big-endian binary form."""

    def __lt__(self, value: object, /) -> bool: ...
    def __le__(self, value: object, /) -> bool: ...
    def __gt__(self, value: object, /) -> bool: ...
    def __ge__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def parse_id(text: str) -> RxId:
    """Parse an ID in any case, with or without hyphens or spaces.

    Raises :class:`InvalidId` saying what is wrong (length, the bad character and its
    position, check character mismatch), ``TypeError`` if ``text`` is not a ``str``.
    """

def is_valid_id(text: str) -> bool:
    """Whether ``text`` parses as an ID. ``TypeError`` if not a ``str``."""

def validate_ids(texts: list[str]) -> list[bool]:
    """:func:`is_valid_id` for many texts at once (the GIL is released for large lists)."""

# --- check characters and health identifiers (rust/src/check.rs) ------------

CIP13_PREFIX: Final[str]
"""``"34009"``, the prefix every CIP13 has (:func:`validate_cip13` enforces it)."""

def mod11_2(body: str) -> str:
    """ISO 7064 MOD 11-2 (pure) check for ``body`` (digits): ``0``-``9`` or ``X``. Raises
    :class:`InvalidIdentifier` naming the first bad character (or the length), ``TypeError`` if
    ``body`` is not a ``str``.
    """

def is_valid_mod11_2(number: str) -> bool:
    """Whether ``number`` is a body (digits) followed by its ISO 7064 MOD 11-2 (pure) check. Exact:
    no separators, no case folding. ``TypeError`` if not a ``str``.
    """

def mod37_2(body: str) -> str:
    """ISO 7064 MOD 37-2 (pure) check for ``body`` (``0``-``9``, ``A``-``Z``, upper case):
    ``0``-``9``, ``A``-``Z`` or ``*``. Raises :class:`InvalidIdentifier` naming the first bad
    character (or the length), ``TypeError`` if ``body`` is not a ``str``.
    """

def is_valid_mod37_2(number: str) -> bool:
    """Whether ``number`` is a body (``0``-``9``, ``A``-``Z``, upper case) followed by its ISO 7064
    MOD 37-2 (pure) check. Exact: no separators, no case folding. ``TypeError`` if not a ``str``.
    """

def mod97_10(body: str) -> str:
    """ISO 7064 MOD 97-10 (pure, numeric) check for ``body`` (digits): two digits. Raises
    :class:`InvalidIdentifier` naming the first bad character (or the length), ``TypeError`` if
    ``body`` is not a ``str``.
    """

def is_valid_mod97_10(number: str) -> bool:
    """Whether ``number`` is a body (digits) followed by its ISO 7064 MOD 97-10 (pure, numeric)
    check. Exact: no separators, no case folding. ``TypeError`` if not a ``str``.
    """

def mod37_36(body: str) -> str:
    """ISO 7064 MOD 37-36 (hybrid) check for ``body`` (``0``-``9``, ``A``-``Z``, upper case):
    ``0``-``9`` or ``A``-``Z``. Raises :class:`InvalidIdentifier` naming the first bad character
    (or the length), ``TypeError`` if ``body`` is not a ``str``.
    """

def is_valid_mod37_36(number: str) -> bool:
    """Whether ``number`` is a body (``0``-``9``, ``A``-``Z``, upper case) followed by its ISO 7064
    MOD 37-36 (hybrid) check. Exact: no separators, no case folding. ``TypeError`` if not a
    ``str``.
    """

def luhn(body: str) -> str:
    """Luhn (mod 10) check for ``body`` (digits): one digit. Raises :class:`InvalidIdentifier`
    naming the first bad character (or the length), ``TypeError`` if ``body`` is not a ``str``.
    """

def is_valid_luhn(number: str) -> bool:
    """Whether ``number`` is a body (digits) followed by its Luhn (mod 10) check. Exact: no
    separators, no case folding. ``TypeError`` if not a ``str``.
    """

def ean13(body: str) -> str:
    """EAN-13 check for ``body`` (exactly 12 digits): one digit. Raises :class:`InvalidIdentifier`
    naming the first bad character (or the length), ``TypeError`` if ``body`` is not a ``str``.
    """

def is_valid_ean13(number: str) -> bool:
    """Whether ``number`` is a body (exactly 12 digits) followed by its EAN-13 check. Exact: no
    separators, no case folding. ``TypeError`` if not a ``str``.
    """

def is_valid_nir(text: str) -> bool:
    """Whether ``text`` is a valid NIR (French patient number: 13 characters + a 2-digit key,
    ``2A``/``2B`` for Corsica; spaces and dots ignored, any case). ``TypeError`` if not a
    ``str``.
    """

def validate_nir(text: str) -> str:
    """The compact NIR (15 characters), or :class:`InvalidIdentifier` saying what is wrong and
    where. ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_nir(texts: list[str]) -> list[bool]:
    """:func:`is_valid_nir` of each text (the GIL is released for large lists)."""

def is_valid_rpps(text: str) -> bool:
    """Whether ``text`` is a valid RPPS number (11 digits, Luhn key; spaces ignored). ``TypeError``
    if not a ``str``.
    """

def validate_rpps(text: str) -> str:
    """The compact RPPS number (11 digits), or :class:`InvalidIdentifier` saying what is wrong and
    where. ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_rpps(texts: list[str]) -> list[bool]:
    """:func:`is_valid_rpps` of each text (the GIL is released for large lists)."""

def is_valid_finess(text: str) -> bool:
    """Whether ``text`` is a valid FINESS number (9 digits, Luhn key; spaces ignored). ``TypeError``
    if not a ``str``.
    """

def validate_finess(text: str) -> str:
    """The compact FINESS number (9 digits), or :class:`InvalidIdentifier` saying what is wrong and
    where. ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_finess(texts: list[str]) -> list[bool]:
    """:func:`is_valid_finess` of each text (the GIL is released for large lists)."""

def is_valid_cip13(text: str) -> bool:
    """Whether ``text`` is a valid CIP13 (13 digits starting ``34009``, EAN-13 key; spaces and
    hyphens ignored). ``TypeError`` if not a ``str``.
    """

def validate_cip13(text: str) -> str:
    """The compact CIP13 (13 digits), or :class:`InvalidIdentifier` saying what is wrong and where.
    ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_cip13(texts: list[str]) -> list[bool]:
    """:func:`is_valid_cip13` of each text (the GIL is released for large lists)."""

def is_valid_erezept_id(text: str) -> bool:
    """Whether ``text`` is a valid E-Rezept ID (``aaa.bbb.bbb.bbb.bbb.cc``, MOD 97-10 check digits;
    all five dots or none). ``TypeError`` if not a ``str``.
    """

def validate_erezept_id(text: str) -> str:
    """The compact E-Rezept ID (17 digits), or :class:`InvalidIdentifier` saying what is wrong and
    where. ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_erezept_id(texts: list[str]) -> list[bool]:
    """:func:`is_valid_erezept_id` of each text (the GIL is released for large lists)."""

def is_valid_eps_id(text: str) -> bool:
    """Whether ``text`` is a valid EPS prescription ID (``XXXXXX-XXXXXX-XXXXXC``, MOD 37-2 check
    with ``+`` for ``*``; both hyphens or none, any case). ``TypeError`` if not a ``str``.
    """

def validate_eps_id(text: str) -> str:
    """The compact EPS prescription ID (18 characters, upper case), or :class:`InvalidIdentifier`
    saying what is wrong and where. ``TypeError`` if ``text`` is not a ``str``.
    """

def are_valid_eps_id(texts: list[str]) -> list[bool]:
    """:func:`is_valid_eps_id` of each text (the GIL is released for large lists)."""

# --- signed QR tokens (rust/src/token.rs) -----------------------------------

# --- QR drawing (rust/src/qr.rs) ---------------------------------------------

# --- the prescription store (rust/src/store/) --------------------------------
