"""The Rust extension module. Import from :mod:`ordonum`, not from here."""

import os
from collections.abc import Iterable
from datetime import datetime
from typing import ClassVar, Final, final

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

TOKEN_TEXT_LEN: Final[int]
"""Length of a token's text: ``RX1:`` + 149 Base45 characters = 153."""

@final
class SigningKey:
    """An Ed25519 private key and its kid (exactly 4 characters in ``A-Z0-9``, e.g. ``FR01``).

    Key errors (bad kid, wrong length, unreadable PEM) raise ``ValueError`` with the reason.
    """

    @staticmethod
    def generate(kid: str) -> SigningKey:
        """A new key from the operating system's CSPRNG."""

    @staticmethod
    def from_bytes(kid: str, raw: bytes) -> SigningKey:
        """From the 32-byte Ed25519 seed (what :meth:`to_bytes` returns)."""

    @staticmethod
    def from_pem(kid: str, pem: str | bytes) -> SigningKey:
        """From a PKCS#8 PEM (``BEGIN PRIVATE KEY``), as written by ``cryptography``/OpenSSL."""

    @property
    def kid(self) -> str:
        """The key id written into every token this key signs."""

    def to_bytes(self) -> bytes:
        """The 32-byte seed. A secret."""

    def to_pem(self) -> str:
        """Unencrypted PKCS#8 v1 PEM, readable by ``cryptography`` and OpenSSL. A secret."""

    def verifying_key(self) -> VerifyingKey:
        """The public half, same kid."""

    def sign(self, message: bytes) -> bytes:
        """A raw 64-byte Ed25519 signature of ``message`` (domain separation is the caller's)."""

@final
class VerifyingKey:
    """An Ed25519 public key and its kid. Weak (small-order) and mixed-order keys are refused."""

    @staticmethod
    def from_bytes(kid: str, raw: bytes) -> VerifyingKey:
        """From the 32-byte public key."""

    @staticmethod
    def from_pem(kid: str, pem: str | bytes) -> VerifyingKey:
        """From a SubjectPublicKeyInfo PEM (``BEGIN PUBLIC KEY``)."""

    @property
    def kid(self) -> str:
        """The key id."""

    def to_bytes(self) -> bytes:
        """The 32-byte public key."""

    def to_pem(self) -> str:
        """SubjectPublicKeyInfo PEM, to publish."""

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Strict Ed25519 verification of a raw signature."""

    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class KeyRing:
    """The verifying keys a verifier trusts: several active kids, revoked kids, a maximum age.

    ``max_age`` is in seconds (``None``: no limit). When set, tokens issued more than five
    minutes in the future are refused too. Adding a revoked kid, or an active kid with a
    different key, raises ``ValueError``; adding the same key again does nothing.
    """

    def __new__(
        cls, keys: Iterable[VerifyingKey] | None = None, *, max_age: float | None = None
    ) -> KeyRing: ...
    def add(self, key: VerifyingKey) -> None:
        """Trust ``key`` under its kid (rotation: several kids are active at once)."""

    def revoke(self, kid: str) -> None:
        """Refuse, from now on and for good, every token signed under ``kid``."""

    @property
    def kids(self) -> list[str]:
        """Active kids, sorted."""

    @property
    def revoked(self) -> list[str]:
        """Revoked kids, sorted."""

    @property
    def max_age(self) -> float | None:
        """Maximum token age in seconds, or ``None``."""

    @max_age.setter
    def max_age(self, value: float | None) -> None: ...

@final
class Token:
    """A verified (or freshly issued) token. Equality compares in constant time."""

    @property
    def text(self) -> str:
        """``RX1:`` + Base45, 153 characters, all QR-alphanumeric: what the QR code holds."""

    @property
    def id(self) -> str:
        """The prescription ID, canonical text ``XXXX-XXXX-XXXX-XXXX-C``."""

    @property
    def access_code(self) -> str:
        """The 128-bit access code, ``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX`` (Crockford Base32:
        typed by hand in any case, ``O``/``I``/``L`` read as ``0``/``1``, hyphens optional)."""

    @property
    def kid(self) -> str:
        """The signing key's id."""

    @property
    def issued_at(self) -> datetime:
        """Issue time, aware UTC, to the second."""

    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class TokenCache:
    """:func:`verify_token` against one key ring, remembering the texts it accepted.

    A text accepted before is accepted again without its Ed25519 check (~50 µs), after the
    checks that can change: its kid still active in :attr:`keyring` (not revoked since) and
    its age within the ring's ``max_age`` now. That is exactly what a full check would decide:
    a signature over an exact text never stops being valid, and a ring never binds an active
    kid to another key. A refused text is never remembered (it is checked in full again). At
    most ``size`` texts are kept, the first remembered forgotten first (a hit does not renew).
    The memory is held in Rust: nothing remembered is a Python object for the garbage
    collector to walk.

    ``ValueError`` if ``size`` is 0, ``OverflowError`` if negative. Thread-safe; the GIL is
    released during a full check.
    """

    def __new__(cls, keyring: KeyRing, size: int = 100_000) -> TokenCache: ...
    def verify(self, text: str) -> Token:
        """As ``verify_token(text, self.keyring)``; :class:`InvalidToken` if refused."""

    def verify_at(self, text: str, now: datetime) -> Token:
        """As ``verify_token_at(text, self.keyring, now)``."""

    @property
    def keyring(self) -> KeyRing: ...
    @property
    def size(self) -> int:
        """The most texts remembered at once."""

    @property
    def hits(self) -> int:
        """Texts accepted from memory, without a signature check."""

    @property
    def checks(self) -> int:
        """Texts accepted after a full check (each then remembered, unless another thread
        remembered it first or its kid was revoked meanwhile)."""

    def __len__(self) -> int:
        """Texts remembered now."""

def issue_token(key: SigningKey, rx_id: str) -> Token:
    """Sign a token for ``rx_id`` with a fresh access code, issued now.

    :class:`InvalidId` for a malformed ID.
    """

def issue_token_at(key: SigningKey, rx_id: str, now: datetime) -> Token:
    """:func:`issue_token` at time ``now`` (an aware ``datetime``, 2020..2156)."""

def issue_tokens(key: SigningKey, rx_ids: Iterable[str]) -> list[Token]:
    """:func:`issue_token` for many IDs in one call, in order, all issued now.

    The GIL is released while signing; large batches are signed on several threads (up to
    8, the machine's cores). :class:`InvalidId` naming the first malformed ID
    (``rx_ids[3]: ...``), ``TypeError`` for a non-``str``; nothing is issued then.
    """

def issue_tokens_at(key: SigningKey, rx_ids: Iterable[str], now: datetime) -> list[Token]:
    """:func:`issue_tokens` at time ``now`` (an aware ``datetime``, 2020..2156)."""

def verify_token(text: str, keyring: KeyRing) -> Token:
    """Verify a token text against ``keyring`` now.

    Every failure raises the same :class:`InvalidToken`, with the same message; ask
    :func:`diagnose_token` for the reason. ``TypeError`` if ``text`` is not a ``str``.
    """

def verify_token_at(text: str, keyring: KeyRing, now: datetime) -> Token:
    """:func:`verify_token` at time ``now`` (an aware ``datetime``)."""

def verify_tokens(texts: Iterable[str], keyring: KeyRing) -> list[Token | None]:
    """Verify many tokens at once (``None`` for each that fails), the GIL released and
    one Ed25519 batch equation for all the signatures (per token about 2x cheaper)."""

def verify_tokens_at(texts: Iterable[str], keyring: KeyRing, now: datetime) -> list[Token | None]:
    """:func:`verify_tokens` at time ``now``."""

def diagnose_token(text: str, keyring: KeyRing) -> str:
    """``"ok"`` or why :func:`verify_token` refuses ``text``, for operators' logs."""

def diagnose_token_at(text: str, keyring: KeyRing, now: datetime) -> str:
    """:func:`diagnose_token` at time ``now``."""

def parse_access_code(text: str) -> str:
    """An access code typed by hand, in canonical grouped form.

    ``ValueError`` saying what is wrong (length, the bad character and its position).
    """

# --- QR drawing (rust/src/qr.rs) ---------------------------------------------

@final
class QrMatrix:
    """A QR symbol. Use :func:`ordonum.qr.matrix` to make one."""

    @property
    def version(self) -> int:
        """QR version, 1..40."""

    @property
    def size(self) -> int:
        """Modules per side, ``4 * version + 17``."""

    @property
    def ecc(self) -> str:
        """Error-correction level, ``"L"``, ``"M"``, ``"Q"`` or ``"H"``."""

    @property
    def mask(self) -> int:
        """Data mask pattern, 0..7."""

    @property
    def modules(self) -> list[list[bool]]:
        """``size`` rows of ``size`` booleans, dark = True, without quiet zone."""

def qr_matrix(text: str, ecc: str = "M") -> QrMatrix:
    """See :func:`ordonum.qr.matrix`."""

def qr_svg(text: str, scale: int, border: int, ecc: str = "M") -> str:
    """See :func:`ordonum.qr.svg`."""

def qr_png(text: str, scale: int, border: int, ecc: str = "M") -> bytes:
    """See :func:`ordonum.qr.png`."""

# --- the prescription store (rust/src/store/) --------------------------------

@final
class Store:
    """The prescription store: an in-memory index with a durable journal.

    Times are Unix milliseconds; ``now_ms=None`` means the system clock. JSON inputs are
    ``bytes`` or ``str`` (unknown fields refused, :class:`InvalidRecord` names the field);
    JSON outputs are ``bytes`` ready to send. A malformed ID argument raises
    :class:`InvalidId`; a non-``str`` where ``str`` is expected raises ``TypeError``.
    Every call releases the GIL while it waits for a lock or the journal. A prescription's
    lines are numbered from 0 everywhere: in documents, in a dispensation's ``line`` and in
    messages.
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

    def create_many(self, records: Iterable[bytes | str], *, now_ms: int | None = None) -> int:
        """Create many prescriptions in one call (bulk loads); returns how many.

        All or nothing before anything is written: the first invalid record raises
        :class:`InvalidRecord` with its index (``records[3].lines[0].quantity: ...``), the
        first taken ID (a duplicate within the batch included) :class:`Conflict`
        (``records[3]: prescription ... already exists``), and the store is unchanged. Then
        the batch is journalled as one group commit (one ``write``, one ``fdatasync``) and
        the call returns once every record is durable and visible. A crash before it
        returns may keep any prefix of the batch, like unacknowledged creations. The GIL is
        released for the whole batch. No documents are returned (use :meth:`get_many`).
        """

    def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes:
        """The prescription's JSON document; :class:`NotFound` if there is none."""

    def get_many(self, rx_ids: Iterable[str], *, now_ms: int | None = None) -> list[bytes | None]:
        """Documents of many prescriptions in one call (``None`` where there is none)."""

    def scan(self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None) -> bytes:
        """Check the access code (constant time), log the access, return the document.

        A missing ID, a wrong code and a malformed code raise the same :class:`NotFound`.

        Unlike every other write, a scan does not wait for the journal: its access-log entry
        is visible at once (:meth:`access_log`) and its record is appended to the journal's
        next group commit, so the call costs microseconds and may run on an event loop. The
        promise, exactly: a crash of the process or of the machine may lose the access-log
        entries of scans acknowledged in the last commit window (about one fdatasync; with
        ``sync="delay"``, up to ``sync_delay_ms`` more for a machine crash); any write
        acknowledged after a scan makes that scan durable too. Dispensations, creations,
        cancellations and consent still wait. Raises :class:`StoreFailed` once the journal
        has failed or the store is closed (a scan is never served without its log entry).
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

    def dispense_submit(
        self,
        rx_id: str,
        dispensation: bytes | str,
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> tuple[bytes, int] | None:
        """:meth:`dispense` for a caller that must not block (an event loop).

        Same checks and errors, then ``(answer, lsn)``: send ``answer`` once ``lsn`` is
        durable (:meth:`wait`, or :meth:`wake_fd` + :meth:`durable_lsn`); ``lsn`` 0 means
        nothing was written (a replay) or the store has no journal. ``None`` when another
        write of this prescription is still in flight: nothing was done, call
        :meth:`dispense` from a thread (it waits its turn).
        """

    def create_submit(self, record: bytes | str, *, now_ms: int | None = None) -> tuple[str, int]:
        """:meth:`create` without waiting: ``(id, lsn)``. The ID is taken at once; the
        prescription is visible to :meth:`get` once ``lsn`` is durable."""

    def wait(self, lsn: int) -> None:
        """Block (GIL released) until ``lsn`` is durable and applied; :class:`StoreFailed` if
        the journal failed first, :class:`InvalidRecord` for an LSN never issued."""

    def durable_lsn(self) -> int:
        """The highest LSN durable (per the sync policy) and applied (``2**64 - 1`` without a
        journal), also after a journal failure: writes up to it are durable whatever happened
        next. Whether the journal failed is ``stats()["failed"]``; :meth:`wait` on a later
        LSN then raises its :class:`StoreFailed`."""

    def wake_fd(self) -> int | None:
        """A non-blocking file descriptor, readable whenever :meth:`durable_lsn` may have
        moved (one byte per group commit, from the first call on); drain it, then read
        :meth:`durable_lsn`. Owned by the store (do not close it); ``None`` in memory."""

    def cancel(self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None) -> str:
        """Cancel on behalf of the prescriber; returns the new status (``"cancelled"``)."""

    def set_consent(self, rx_id: str, allowed: bool, *, now_ms: int | None = None) -> None:
        """Whether the prescriber may see the dispensations (the patient's choice)."""

    def owner(self, rx_id: str) -> tuple[str, str, bool]:
        """``(prescriber_rpps, patient_nir, consent)``, for authorisation decisions."""

    def qr_token(self, rx_id: str) -> str | None:
        """The QR token text given as ``qr_token`` when the prescription was created (to print
        the same QR again), or ``None``; :class:`NotFound` for an unknown ID."""

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
        """Counters: prescriptions, journal_bytes, fsyncs, batches, records, failed, ...

        ``journal_bytes`` counts the current segment's header and batches (its logical size),
        not its file, which under ``sync="always"`` also holds pre-zeroed space ahead;
        ``truncated_bytes`` counts the torn bytes found (and zeroed or cut) at open.
        """

    def __len__(self) -> int: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *args: object) -> bool: ...
