"""QR codes for prescription tokens, encoded and drawn in Rust.

A token (``RX1:`` + Base45) is all QR-alphanumeric, so it is encoded as one alphanumeric
segment: a version 6 symbol at error-correction level M. :func:`svg` and :func:`png` draw
it without any image library; :func:`to_segno` hands the very same symbol (content, level,
version and mask) to `segno <https://segno.readthedocs.io>`_ for its other outputs (PDF,
EPS, terminal, ...); segno is the ``qr`` extra: ``pip install ordonum[qr]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ordonum._core import QrMatrix, qr_matrix, qr_png, qr_svg

if TYPE_CHECKING:
    import segno

__all__ = ["Ecc", "QrMatrix", "matrix", "png", "svg", "to_segno"]

Ecc = Literal["L", "M", "Q", "H"]


def matrix(text: str, ecc: Ecc = "M") -> QrMatrix:
    """The QR symbol of ``text``: ``.version``, ``.size``, ``.modules`` (rows, dark = True).

    Raises ``ValueError`` for an empty text, a text too long for a QR code at ``ecc``, or
    an unknown level; ``TypeError`` if ``text`` is not a ``str``.
    """
    return qr_matrix(text, ecc)


def svg(text: str, *, scale: int = 4, border: int = 4, ecc: Ecc = "M") -> str:
    """A compact SVG document: one ``<path>`` of horizontal runs on a white square.

    ``scale`` is pixels per module for the ``width``/``height`` attributes (1..64; the
    ``viewBox`` is in modules, so the drawing scales freely); ``border`` is the quiet zone
    in modules (0..64; scanners want 4).
    """
    return qr_svg(text, scale, border, ecc)


def png(text: str, *, scale: int = 4, border: int = 4, ecc: Ecc = "M") -> bytes:
    """A 1-bit grayscale PNG, ``scale`` pixels per module (1..64), ``border`` modules of
    quiet zone (0..64)."""
    return qr_png(text, scale, border, ecc)


def to_segno(text: str, ecc: Ecc = "M") -> segno.QRCode:
    """The same symbol as :func:`matrix` as a ``segno.QRCode``: same content and level
    (segno's error boost is off), segno's own choice of version (the same, by the tests),
    and the same mask, so for a token the modules are identical. (For texts whose bit
    stream ends on a byte boundary, segno pads with 0x00 rather than ISO's 0xEC: the
    symbols then differ but read back the same.)

    Needs segno (the ``qr`` extra); raises ``ImportError`` saying so when it is missing.
    """
    try:
        import segno
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ordonum.qr.to_segno needs segno: pip install 'ordonum[qr]'") from e
    m = qr_matrix(text, ecc)
    return segno.make_qr(text, error=ecc.lower(), mask=m.mask, boost_error=False)
