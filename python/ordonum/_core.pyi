"""The Rust extension module. Import from :mod:`ordonum`, not from here."""

import os
from collections.abc import Iterable
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

@final
class Store:
    """The prescription store: an in-memory index with a durable journal.

    Times are Unix milliseconds; ``now_ms=None`` means the system clock. JSON inputs are
    ``bytes`` or ``str`` (unknown fields refused, :class:`InvalidRecord` names the field);
    JSON outputs are ``bytes`` ready to send. A malformed ID argument raises
    :class:`InvalidId`; a non-``str`` where ``str`` is expected raises ``TypeError``.
    Every call releases the GIL while it waits for a lock or the journal.
    """

    @staticmethod
    def open(
        path: str | os.PathLike[str], *, sync: str = "always", sync_delay_ms: int = 2
    ) -> Store:
        """Open (creating it if needed) the store kept in directory ``path``.

        ``sync="always"``: a write is acknowledged after an ``fdatasync`` covering it
        (group commit). ``sync="delay"``: acknowledged after the ``write``, synced at most
        ``sync_delay_ms`` later (a power cut may lose that window; a killed process does
        not). Recovery replays the latest snapshot and the journal, truncating a torn tail;
        raises :class:`StoreFailed` on corruption followed by valid records (naming the
        file and offset) or if another process has the directory open.
        """

    @staticmethod
    def memory() -> Store:
        """A store without a journal, for tests: same rules, nothing durable."""

    def create(self, record: bytes | str, *, now_ms: int | None = None) -> bytes:
        """Create a prescription (``created_at = now_ms``); returns its document.

        :class:`Conflict` if the ID exists; :class:`InvalidRecord` for a bad record.
        """

    def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes:
        """The prescription's JSON document; :class:`NotFound` if there is none."""

    def get_many(self, rx_ids: Iterable[str], *, now_ms: int | None = None) -> list[bytes | None]:
        """Documents of many prescriptions in one call (``None`` where there is none)."""

    def scan(self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None) -> bytes:
        """Check the access code (constant time), log the access durably, return the document.

        A missing ID, a wrong code and a malformed code raise the same :class:`NotFound`.
        """

    def dispense(
        self,
        rx_id: str,
        dispensation: bytes | str,
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        """Record a dispensation (all lines or none); returns the answer JSON.

        A repeated ``idempotency_key`` returns the first answer with ``"replayed": true``
        and writes nothing (:class:`Conflict` if the request differs). :class:`Conflict` on
        over-dispensing, a cancelled, expired or fully dispensed prescription;
        :class:`NotFound` on a wrong ID or code.
        """

    def cancel(self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None) -> str:
        """Cancel on behalf of the prescriber; returns the new status (``"cancelled"``)."""

    def set_consent(self, rx_id: str, allowed: bool, *, now_ms: int | None = None) -> None:
        """Whether the prescriber may see the dispensations (the patient's choice)."""

    def owner(self, rx_id: str) -> tuple[str, str, bool]:
        """``(prescriber_rpps, patient_nir, consent)``, for authorisation decisions."""

    def dispensations(self, rx_id: str) -> bytes:
        """``{"dispensations": [...]}`` as JSON bytes."""

    def by_patient(self, nir: str, *, limit: int = 50, before: str | None = None) -> list[str]:
        """The patient's prescription IDs, newest first; ``before`` is the cursor (an ID)."""

    def access_log(self, rx_id: str) -> bytes:
        """``{"access_log": [{"at", "actor", "action"}]}`` as JSON bytes."""

    def checkpoint(self) -> None:
        """Write a snapshot and drop the journal segments it covers (no-op in memory)."""

    def close(self) -> None:
        """Drain and sync pending writes, stop the journal; later writes raise StoreFailed."""

    def stats(self) -> dict[str, int]:
        """Counters: prescriptions, journal_bytes, fsyncs, batches, records, failed, ..."""

    def __len__(self) -> int: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *args: object) -> bool: ...
