"""Prescription IDs: format, check character, ordering, concurrency, errors."""

import random
import threading
from datetime import UTC, datetime

import ordonum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ordonum import IdGenerator, InvalidId, is_valid_id, parse_id, validate_ids
from stdnum.iso7064 import mod_37_2

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every symbol a typist could put in place of another, O/I/L aside (they *are* 0/1/1).
SUBSTITUTES = CROCKFORD + "U*"
GEN = IdGenerator(4242)


def compact(text: str) -> str:
    return text.replace("-", "")


def test_format_and_fields() -> None:
    before = datetime.now(UTC)
    text = GEN.new()
    after = datetime.now(UTC)
    assert len(text) == 21
    assert [text[i] for i in (4, 9, 14, 19)] == ["-"] * 4
    assert set(compact(text)) <= set(CROCKFORD)
    rx = parse_id(text)
    assert rx.text == text
    assert str(rx) == text
    assert rx.compact == compact(text)
    assert rx.node == 4242 == GEN.node
    assert rx.created_at.tzinfo is UTC or rx.created_at.utcoffset() is not None
    assert rx.created_at.utcoffset() == UTC.utcoffset(None)
    # created_at has millisecond precision; allow the truncation below `before`.
    assert before.timestamp() - 0.001 <= rx.created_at.timestamp() <= after.timestamp() + 0.001
    assert rx.timestamp_ms == int(rx.created_at.timestamp() * 1000) - ordonum.ID_EPOCH_UNIX_MS
    assert len(rx.bytes) == 10
    assert repr(rx) == f"RxId('{text}')"
    # The compact form is plain ISO 7064 MOD 37-2, as python-stdnum checks it.
    assert mod_37_2.is_valid(rx.compact)


@pytest.mark.parametrize("seed", range(4))
def test_every_single_error_is_rejected(seed: int) -> None:
    """Exhaustive per ID: all substitutions, adjacent and jump transpositions."""
    rng = random.Random(seed)
    ids = [compact(t) for t in GEN.new_batch(2000)]
    for text in [*rng.sample(ids, 50), compact(IdGenerator(rng.randrange(2**22)).new())]:
        assert is_valid_id(text)
        chars = list(text)
        for i, c in enumerate(chars):
            for a in SUBSTITUTES:
                if a != c:
                    bad = "".join([*chars[:i], a, *chars[i + 1 :]])
                    assert not is_valid_id(bad), (text, bad)
            for gap in (1, 2):
                if i + gap < len(chars) and chars[i] != chars[i + gap]:
                    swapped = chars.copy()
                    swapped[i], swapped[i + gap] = swapped[i + gap], swapped[i]
                    assert not is_valid_id("".join(swapped)), (text, gap)


@settings(max_examples=300)
@given(n=st.integers(1, 50), lower=st.booleans(), sep=st.sampled_from(["-", " ", ""]))
def test_round_trips_in_any_spelling(n: int, lower: bool, sep: str) -> None:
    for text in GEN.new_batch(n):
        spelled = text.replace("-", sep)
        spelled = spelled.lower() if lower else spelled
        rx = parse_id(spelled)
        assert rx.text == text
        assert parse_id(rx.compact) == rx
        assert hash(parse_id(text)) == hash(rx)


@given(st.text(max_size=80))
def test_junk_never_crashes(text: str) -> None:
    if is_valid_id(text):
        rx = parse_id(text)
        assert rx.compact == compact(rx.text)
    else:
        with pytest.raises(InvalidId, match=r".+"):
            parse_id(text)


def test_crockford_normalisation() -> None:
    text = compact(GEN.new())
    loose = text.replace("0", "o").replace("1", "I")
    assert parse_id(loose).compact == text
    assert parse_id(text.replace("1", "l")).compact == text


def test_ids_sort_in_creation_order() -> None:
    ids = GEN.new_batch(50_000) + [GEN.new() for _ in range(1000)] + GEN.new_batch(70_000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    compacts = [compact(t) for t in ids]
    assert compacts == sorted(compacts)
    parsed = [parse_id(t) for t in ids]
    keys = [(r.timestamp_ms, r.sequence) for r in parsed]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert parsed == sorted(parsed)


def test_threads_sharing_a_generator_never_collide() -> None:
    gen = IdGenerator(7)
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        for i in range(60):
            out.extend(gen.new_batch(10_000))
            out.extend(gen.new() for _ in range(100 if i % 2 else 10))

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r == sorted(r), "each thread sees its own IDs increasing"
    total = sum(len(r) for r in results)
    assert total > 2_400_000
    assert len({x for r in results for x in r}) == total


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty ID"),
        (" - -", "empty ID"),
        (
            "ABC",
            "an ID has 17 characters (16 + 1 check character, hyphens and spaces ignored), got 3",
        ),
        (
            "A" * 10_000,
            "an ID has 17 characters (16 + 1 check character, hyphens and spaces ignored), "
            "got 10000",
        ),
        ("0000U00000000000K", "invalid character 'U' at position 5"),
        ("00é0000000000000K", "invalid character 'é' at position 3"),
        ("000\x00000000000000K", "invalid character '\\0' at position 4"),
        ("0000-0000-0000-0000-*", "invalid character '*' at position 21"),
        (
            "0000-0000-0000-0000-2",
            "check character '2' does not match the rest of the ID (mistyped or altered ID)",
        ),
    ],
)
def test_junk_gives_precise_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidId) as info:
        parse_id(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
    assert not is_valid_id(text)


def test_unissued_check_characters_are_refused() -> None:
    # A body whose MOD 37-2 check is I, L or O: valid for stdnum, never issued by ordonum.
    rng = random.Random(1)
    found = 0
    while found < 20:
        body = "".join(rng.choice(CROCKFORD) for _ in range(16))
        check = mod_37_2.calc_check_digit(body)
        if check in "ILO":
            found += 1
            with pytest.raises(InvalidId, match="which ordonum never issues"):
                parse_id(body + check)


def test_validate_ids_batch() -> None:
    good = GEN.new_batch(500)
    texts = [t if i % 3 else t[:-1] + ("0" if t[-1] != "0" else "1") for i, t in enumerate(good)]
    assert validate_ids(texts) == [is_valid_id(t) for t in texts]
    assert validate_ids([]) == []


def test_type_errors() -> None:
    for bad in (None, 42, b"0000-0000-0000-0000-1", ["x"]):
        with pytest.raises(TypeError, match="ID must be str, not"):
            parse_id(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            is_valid_id(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ID must be str, not int"):
        parse_id(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        validate_ids(["ok", 3])  # type: ignore[list-item]


def test_generator_arguments() -> None:
    assert IdGenerator(ordonum.MAX_NODE).node == 2**22 - 1
    with pytest.raises(ValueError, match=r"node must be between 0 and 4194303, got 4194304"):
        IdGenerator(2**22)
    with pytest.raises(OverflowError):
        IdGenerator(-1)
    with pytest.raises(ValueError, match="new_batch makes at most 16777216 IDs per call, got"):
        GEN.new_batch(2**24 + 1)
    assert GEN.new_batch(0) == []
    assert repr(IdGenerator(3)) == "IdGenerator(node=3)"
