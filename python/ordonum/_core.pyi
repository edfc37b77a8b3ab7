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

# --- signed QR tokens (rust/src/token.rs) -----------------------------------

# --- QR drawing (rust/src/qr.rs) ---------------------------------------------

# --- the prescription store (rust/src/store/) --------------------------------
