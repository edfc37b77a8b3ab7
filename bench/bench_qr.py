"""QR drawing of one token: ordonum.qr (fast_qr + Rust drawing) against segno and qrcode."""

from __future__ import annotations

import io

import pytest
import qrcode
import qrcode.image.svg
import segno
from ordonum import IdGenerator, SigningKey, issue_token, qr
from pytest_benchmark.fixture import BenchmarkFixture

TEXT = issue_token(SigningKey.generate("FR01"), IdGenerator(1).new()).text


def segno_svg(text: str) -> str:
    return segno.make_qr(text, error="m", boost_error=False).svg_inline(scale=4)


def segno_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(text, error="m", boost_error=False).save(out, kind="png", scale=4)
    return out.getvalue()


def qrcode_make(text: str) -> qrcode.QRCode[object]:
    q: qrcode.QRCode[object] = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=4, border=4
    )
    q.add_data(text)
    q.make(fit=True)
    return q


def qrcode_svg(text: str) -> str:
    img = qrcode_make(text).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    return img.to_string(encoding="unicode")  # type: ignore[no-any-return]


def qrcode_png(text: str) -> bytes:
    out = io.BytesIO()
    qrcode_make(text).make_image().save(out)
    return out.getvalue()


@pytest.mark.benchmark(group="qr-svg")
def test_svg_ordonum(benchmark: BenchmarkFixture) -> None:
    assert benchmark(qr.svg, TEXT).startswith("<?xml")


@pytest.mark.benchmark(group="qr-svg")
def test_svg_segno(benchmark: BenchmarkFixture) -> None:
    assert "<svg" in benchmark(segno_svg, TEXT)


@pytest.mark.benchmark(group="qr-svg")
def test_svg_qrcode(benchmark: BenchmarkFixture) -> None:
    assert "<svg" in benchmark(qrcode_svg, TEXT)


@pytest.mark.benchmark(group="qr-png")
def test_png_ordonum(benchmark: BenchmarkFixture) -> None:
    assert benchmark(qr.png, TEXT).startswith(b"\x89PNG")


@pytest.mark.benchmark(group="qr-png")
def test_png_segno(benchmark: BenchmarkFixture) -> None:
    assert benchmark(segno_png, TEXT).startswith(b"\x89PNG")


@pytest.mark.benchmark(group="qr-png")
def test_png_qrcode(benchmark: BenchmarkFixture) -> None:
    assert benchmark(qrcode_png, TEXT).startswith(b"\x89PNG")


@pytest.mark.benchmark(group="qr-matrix")
def test_matrix_ordonum(benchmark: BenchmarkFixture) -> None:
    assert benchmark(qr.matrix, TEXT).version == 6


@pytest.mark.benchmark(group="qr-matrix")
def test_make_segno(benchmark: BenchmarkFixture) -> None:
    assert benchmark(segno.make_qr, TEXT, error="m", boost_error=False).version == 6
