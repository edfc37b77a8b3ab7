"""ordonum.qr: symbols decode back to the exact text (zxing-cpp), agree with segno, and the
SVG and PNG drawings are the matrix."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import segno
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from ordonum import IdGenerator, SigningKey, issue_token, qr
from PIL import Image

KEY = SigningKey.generate("FR01")
GEN = IdGenerator(3)
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def grid(m: qr.QrMatrix, border: int = 4, scale: int = 2) -> np.ndarray:
    """The matrix as a grayscale image (dark = 0) with a quiet zone."""
    a = np.where(np.array(m.modules, dtype=bool), 0, 255).astype(np.uint8)
    a = np.pad(a, border, constant_values=255)
    return np.kron(a, np.ones((scale, scale), dtype=np.uint8))


def decode(image: np.ndarray | Image.Image) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


def test_a_thousand_tokens_decode_back_from_png_and_matrix() -> None:
    for _ in range(1000):
        text = issue_token(KEY, GEN.new()).text
        m = qr.matrix(text)
        assert (m.version, m.size, m.ecc) == (6, 41, "M")
        assert decode(grid(m)) == [text]
        png = qr.png(text, scale=2)
        assert decode(Image.open(io.BytesIO(png))) == [text]


def test_to_segno_gives_the_same_symbol_for_tokens() -> None:
    for _ in range(50):
        text = issue_token(KEY, GEN.new()).text
        same = qr.to_segno(text)
        assert (same.version, same.error, same.mode) == (6, "M", "alphanumeric")
        assert segno_rows(same) == qr.matrix(text).modules


def segno_rows(code: segno.QRCode) -> list[list[bool]]:
    return [[bool(v) for v in row] for row in code.matrix]


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet=ALNUM, min_size=1, max_size=400),
        st.text(alphabet="0123456789", min_size=1, max_size=400),
        st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=200),
    ),
    ecc=st.sampled_from(["L", "M", "Q", "H"]),
)
def test_same_version_as_segno_and_same_symbol_via_to_segno(text: str, ecc: qr.Ecc) -> None:
    m = qr.matrix(text, ecc)
    theirs = segno.make_qr(text, error=ecc.lower(), boost_error=False)
    assert m.version == theirs.version
    assert m.size == 4 * m.version + 17 == len(m.modules) == len(m.modules[0])
    same = qr.to_segno(text, ecc)
    assert (same.version, same.error, same.mask) == (m.version, ecc, m.mask)
    if segno_rows(same) != m.modules:
        # segno 1.6 pads a bit stream that ends on a byte boundary with a 0x00 codeword
        # where ISO/IEC 18004 puts 0xEC (never the case for a token, checked below): the
        # symbols differ, and both read back the same.
        want = [text.encode()]
        assert decode_bytes(grid(m, scale=3)) == decode_bytes(grid_of(same)) == want


def decode_bytes(image: np.ndarray) -> list[bytes]:
    return [bytes(r.bytes) for r in zxingcpp.read_barcodes(image)]


def grid_of(code: segno.QRCode) -> np.ndarray:
    a = np.where(np.array(segno_rows(code), dtype=bool), 0, 255).astype(np.uint8)
    return np.kron(np.pad(a, 4, constant_values=255), np.ones((3, 3), dtype=np.uint8))


def test_png_is_a_1_bit_picture_of_the_matrix() -> None:
    text = issue_token(KEY, GEN.new()).text
    m = qr.matrix(text)
    for scale, border in [(1, 0), (3, 4), (4, 2)]:
        img = Image.open(io.BytesIO(qr.png(text, scale=scale, border=border)))
        assert img.format == "PNG"
        assert img.mode == "1"
        side = (m.size + 2 * border) * scale
        assert img.size == (side, side)
        px = np.array(img, dtype=bool)  # True = white
        want = ~np.pad(np.array(m.modules, dtype=bool), border, constant_values=False)
        assert (px == np.kron(want, np.ones((scale, scale), dtype=bool))).all()


def paint(d: str, n: int) -> list[list[bool]]:
    """Paint the SVG path's horizontal runs (M x y.5 h n / m dx 0 h n) on an n x n grid."""
    out = [[False] * n for _ in range(n)]
    x = y = 0
    for cmd, a, b in re.findall(r"([Mmh])([\d.]+)(?: ([\d.]+))?", d):
        if cmd == "M":
            x, y = int(a), int(float(b))
        elif cmd == "m":
            assert b == "0"
            x += int(a)
        else:
            for i in range(x, x + int(a)):
                out[y][i] = True
            x += int(a)
    assert re.fullmatch(r"([Mm][\d.]+ [\d.]+h\d+)+", d)
    return out


def test_svg_is_well_formed_and_draws_the_matrix() -> None:
    text = issue_token(KEY, GEN.new()).text
    m = qr.matrix(text)
    doc = qr.svg(text, scale=5, border=3)
    root = ET.fromstring(doc.encode())
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    n = m.size + 6
    assert (root.get("width"), root.get("height")) == (str(5 * n), str(5 * n))
    assert root.get("viewBox") == f"0 0 {n} {n}"
    background, path = root.findall(f"{ns}path")
    assert background.get("fill") == "#fff"
    assert path.get("stroke") == "#000"
    painted = paint(path.get("d") or "", n)
    padded = [[False] * n for _ in range(3)]
    rows = [[False] * 3 + row + [False] * 3 for row in m.modules]
    assert painted == padded + rows + padded
    assert len(doc) < 4000, "compact: one path of runs"


def test_errors() -> None:
    with pytest.raises(ValueError, match="cannot encode an empty text"):
        qr.matrix("")
    with pytest.raises(ValueError, match="text too long for a QR code at level H: 3000 bytes"):
        qr.svg("a" * 3000, ecc="H")
    with pytest.raises(ValueError, match="ecc must be one of 'L', 'M', 'Q', 'H', got \"X\""):
        qr.matrix("A", "X")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale must be between 1 and 64, got 0"):
        qr.png("A", scale=0)
    with pytest.raises(ValueError, match="border must be between 0 and 64, got 65"):
        qr.svg("A", border=65)
    with pytest.raises(TypeError, match="text must be str, not bytes"):
        qr.png(b"A")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        qr.png("A", scale=-1)
