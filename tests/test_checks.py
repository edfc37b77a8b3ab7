"""Check characters and identifiers, differentially against python-stdnum.

Where ordonum's format rules differ from stdnum's, the comparison is restricted to inputs
both define, and the difference is asserted separately:

* MOD 11-2 / MOD 37-2: ISO 7064 keeps the supplementary symbol (``X``, ``*``) for the check
  position; ordonum refuses it in the body, stdnum reads it anywhere.
* MOD 97-10: ordonum implements the numeric system; stdnum also converts letters (IBAN).
* Luhn: ordonum wants a body of at least one digit plus the check; stdnum takes ``"0"``.
* EAN-13: stdnum's ``ean`` also takes 8, 12 and 14 digits; ordonum's is 13 only.
"""

import random
import string
from collections.abc import Callable

import pytest
from ordonum import InvalidIdentifier, checks
from stdnum import ean, luhn
from stdnum.fr import nir as std_nir
from stdnum.iso7064 import mod_11_2, mod_37_2, mod_37_36, mod_97_10

N = 100_000
DIGITS = string.digits
ALNUM = string.digits + string.ascii_uppercase
HEX = "0123456789ABCDEF"


def corrupt(rng: random.Random, s: str, alphabets: list[str]) -> str:
    """One typing error: a substitution (from that position's alphabet), an adjacent or a
    jump transposition. Returns a different string."""
    while True:
        chars = list(s)
        kind = rng.randrange(3)
        i = rng.randrange(len(chars))
        if kind == 0:
            chars[i] = rng.choice(alphabets[i])
        else:
            j = i + kind
            if j >= len(chars):
                continue
            chars[i], chars[j] = chars[j], chars[i]
        out = "".join(chars)
        if out != s:
            return out


PRIMITIVES: list[
    tuple[str, Callable[[str], str], Callable[[str], bool], Callable[[str], bool], str, str]
] = [
    # name, ours(body), ours_valid, stdnum_valid, body alphabet, check alphabet
    ("mod11_2", checks.mod11_2, checks.is_valid_mod11_2, mod_11_2.is_valid, DIGITS, DIGITS + "X"),
    ("mod37_2", checks.mod37_2, checks.is_valid_mod37_2, mod_37_2.is_valid, ALNUM, ALNUM + "*"),
    ("mod97_10", checks.mod97_10, checks.is_valid_mod97_10, mod_97_10.is_valid, DIGITS, DIGITS),
    ("mod37_36", checks.mod37_36, checks.is_valid_mod37_36, mod_37_36.is_valid, ALNUM, ALNUM),
    ("luhn", checks.luhn, checks.is_valid_luhn, luhn.is_valid, DIGITS, DIGITS),
]
STD_CALC: dict[str, Callable[[str], str]] = {
    "mod11_2": mod_11_2.calc_check_digit,
    "mod37_2": mod_37_2.calc_check_digit,
    "mod97_10": mod_97_10.calc_check_digits,
    "mod37_36": mod_37_36.calc_check_digit,
    "luhn": luhn.calc_check_digit,
}


@pytest.mark.parametrize(
    ("name", "ours", "ours_valid", "std_valid", "body_abc", "check_abc"),
    PRIMITIVES,
    ids=[p[0] for p in PRIMITIVES],
)
def test_primitive_agrees_with_stdnum(
    name: str,
    ours: Callable[[str], str],
    ours_valid: Callable[[str], bool],
    std_valid: Callable[[str], bool],
    body_abc: str,
    check_abc: str,
) -> None:
    rng = random.Random(name)
    supplementary = set(check_abc) - set(body_abc)
    compared = 0
    for _ in range(N):
        body = "".join(rng.choices(body_abc, k=rng.randint(1, 24)))
        check = ours(body)
        assert check == STD_CALC[name](body)
        full = body + check
        assert ours_valid(full)
        assert std_valid(full)
        width = len(check)
        alphabets = [body_abc] * (len(full) - width) + [check_abc if width == 1 else DIGITS] * width
        bad = corrupt(rng, full, alphabets)
        if supplementary & set(bad[: len(bad) - width]):
            assert not ours_valid(bad), bad  # ISO 7064: the check symbol stays at the end
            continue
        assert ours_valid(bad) == std_valid(bad), (full, bad)
        compared += 1
    assert compared > N * 0.9


def test_ean13_agrees_with_stdnum() -> None:
    rng = random.Random("ean13")
    for _ in range(N):
        body = "".join(rng.choices(DIGITS, k=12))
        full = body + checks.ean13(body)
        assert full[-1] == ean.calc_check_digit(body)
        assert checks.is_valid_ean13(full)
        assert ean.is_valid(full)
        bad = corrupt(rng, full, [DIGITS] * 13)
        assert checks.is_valid_ean13(bad) == ean.is_valid(bad), (full, bad)


def random_nir(rng: random.Random) -> str:
    n13 = "".join(rng.choices(DIGITS, k=13))
    if rng.random() < 0.2:
        n13 = n13[:5] + rng.choice(["2A", "2B"]) + n13[7:]
    return n13 + std_nir.calc_check_digits(n13)


def test_nir_agrees_with_stdnum() -> None:
    rng = random.Random("nir")
    nir_abc = [DIGITS] * 5 + [DIGITS, DIGITS + "AB"] + [DIGITS] * 8
    for i in range(N):
        full = random_nir(rng)
        typed = std_nir.format(full) if i % 3 == 0 else full
        assert checks.validate_nir(typed) == full == std_nir.validate(typed)
        bad = corrupt(rng, full, nir_abc)
        assert checks.is_valid_nir(bad) == std_nir.is_valid(bad), (full, bad)
    batch = [random_nir(rng) for _ in range(1000)]
    batch = [corrupt(rng, x, nir_abc) if k % 2 else x for k, x in enumerate(batch)]
    assert checks.are_valid_nir(batch) == [std_nir.is_valid(x) for x in batch]


@pytest.mark.parametrize(
    ("name", "length", "validate", "are_valid"),
    [
        ("rpps", 11, checks.validate_rpps, checks.are_valid_rpps),
        ("finess", 9, checks.validate_finess, checks.are_valid_finess),
    ],
)
def test_luhn_numbers_agree_with_stdnum(
    name: str,
    length: int,
    validate: Callable[[str], str],
    are_valid: Callable[[list[str]], list[bool]],
) -> None:
    rng = random.Random(name)
    texts = []
    for _ in range(20_000):
        body = "".join(rng.choices(DIGITS, k=length - 1))
        full = body + luhn.calc_check_digit(body)
        assert validate(full) == full
        texts += [full, corrupt(rng, full, [DIGITS] * length)]
    assert are_valid(texts) == [luhn.is_valid(t) for t in texts]


def test_cip13_agrees_with_stdnum_and_enforces_the_prefix() -> None:
    rng = random.Random("cip13")
    texts = []
    for _ in range(20_000):
        body = "34009" + "".join(rng.choices(DIGITS, k=7))
        full = body + ean.calc_check_digit(body)
        texts += [full, corrupt(rng, full, [DIGITS] * 13)]
    expected = [ean.is_valid(t) and t.startswith("34009") for t in texts]
    assert checks.are_valid_cip13(texts) == expected
    assert checks.CIP13_PREFIX == "34009"
    with pytest.raises(InvalidIdentifier) as info:
        checks.validate_cip13("9780471117094")  # a valid EAN-13 (a book), not a CIP13
    assert str(info.value) == "CIP13 must start with 34009, got 97804"


def test_erezept_and_eps_ids_agree_with_stdnum() -> None:
    rng = random.Random("peers")
    for _ in range(20_000):
        body = rng.choice(["160", "169", "200", "209"]) + "".join(rng.choices(DIGITS, k=12))
        full = body + mod_97_10.calc_check_digits(body)
        dotted = ".".join([full[i : i + 3] for i in range(0, 15, 3)] + [full[15:]])
        assert checks.validate_erezept_id(dotted) == full
        bad = corrupt(rng, full, [DIGITS] * 17)
        assert checks.is_valid_erezept_id(bad) == mod_97_10.is_valid(bad)

        eps = "".join(rng.choices(HEX, k=6) + rng.choices(ALNUM, k=6) + rng.choices(HEX, k=5))
        c = mod_37_2.calc_check_digit(eps).replace("*", "+")
        text = f"{eps[:6]}-{eps[6:12]}-{eps[12:]}{c}"
        assert checks.validate_eps_id(text.lower()) == eps + c
        bad = corrupt(rng, eps + c, [HEX] * 6 + [ALNUM] * 6 + [HEX] * 5 + [ALNUM + "+"])
        assert checks.is_valid_eps_id(bad) == mod_37_2.is_valid(bad.replace("+", "*"))


@pytest.mark.parametrize(
    ("func", "text", "message"),
    [
        (checks.validate_nir, "", "empty NIR"),
        (
            checks.validate_nir,
            "2951099126111",
            "NIR must have 15 characters (13 + a 2-digit key; spaces and dots ignored), got 13",
        ),
        (
            checks.validate_nir,
            "295109912611199",
            'check key "99" does not match the rest of the NIR (mistyped or altered)',
        ),
        (
            checks.validate_nir,
            "253072C07300443",
            "invalid character 'C' at position 7 of NIR (expected a digit, or 2A/2B for Corsica)",
        ),
        (
            checks.validate_rpps,
            "1000000000X",
            "invalid character 'X' at position 11 of RPPS number (expected a digit)",
        ),
        (
            checks.validate_finess,
            "75071218",
            "FINESS number must have 9 digits (spaces ignored), got 8",
        ),
        (
            checks.validate_cip13,
            "3400949497295",
            'check key "5" does not match the rest of the CIP13 (mistyped or altered)',
        ),
        (
            checks.validate_erezept_id,
            "160.000.000.000.12.301",
            "misplaced or missing '.' at position 19 of E-Rezept ID (write it "
            "aaa.bbb.bbb.bbb.bbb.cc, or without '.')",
        ),
        (
            checks.validate_eps_id,
            "A1B2C3-A83008-Z0001A",
            "invalid character 'Z' at position 15 of EPS prescription ID "
            "(expected a hexadecimal digit)",
        ),
        (
            checks.mod37_2,
            "ab",
            "invalid character 'a' at position 1 of MOD 37-2 body (expected 0-9 or A-Z)",
        ),
        (checks.ean13, "123", "EAN-13 body must have 12 digits, got 3"),
        (checks.luhn, "", "empty Luhn body"),
    ],
)
def test_errors_say_what_and_where(func: Callable[[str], object], text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        func(text)
    assert str(info.value) == message


def test_real_identifiers() -> None:
    assert checks.validate_nir("2 95 10 99 126 111 93") == "295109912611193"
    assert checks.validate_nir("2.53.07.2a.073.004.43") == "253072A07300443"
    assert checks.validate_finess("750 712 184") == "750712184"  # AP-HP
    assert checks.validate_cip13("3 400 949 497 294") == "3400949497294"
    assert checks.mod37_2("G123489654321") == "Y"
    assert checks.mod97_10("99991234567890121414") == "90"


def test_type_errors() -> None:
    funcs: list[Callable[[str], object]] = [
        checks.mod11_2,
        checks.is_valid_luhn,
        checks.is_valid_nir,
        checks.validate_cip13,
    ]
    for f in funcs:
        with pytest.raises(TypeError, match="must be str, not int"):
            f(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be str \(NIR\), not bytes"):
        checks.are_valid_nir(["x", b"y"])  # type: ignore[list-item]
    assert checks.is_valid_nir("\ud800" * 15) is False
    with pytest.raises(InvalidIdentifier, match="lone surrogate"):
        checks.validate_nir("\ud800")
