"""The Rust extension module. Import from :mod:`ordonum`, not from here."""

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

def issue_token(key: SigningKey, rx_id: str) -> Token:
    """Sign a token for ``rx_id`` with a fresh access code, issued now.

    :class:`InvalidId` for a malformed ID.
    """

def issue_token_at(key: SigningKey, rx_id: str, now: datetime) -> Token:
    """:func:`issue_token` at time ``now`` (an aware ``datetime``, 2020..2156)."""

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
