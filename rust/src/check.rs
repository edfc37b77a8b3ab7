//! Check characters (ISO/IEC 7064, Luhn, EAN-13) and the identifiers a prescription carries.
//!
//! # Primitives
//!
//! Each primitive has a `*_check(body)` that computes the check character(s) for a body and
//! an `is_valid_*(full)` for body + check. They are exact: no case folding, no separators.
//!
//! | primitive  | body            | check                     | rule                                  |
//! |------------|-----------------|---------------------------|---------------------------------------|
//! | MOD 11-2   | digits          | `0`-`9` or `X`            | ISO 7064 pure, `p = (2p + v) mod 11`  |
//! | MOD 37-2   | `0`-`9` `A`-`Z` | `0`-`9` `A`-`Z` or `*`    | ISO 7064 pure, `p = (2p + v) mod 37`  |
//! | MOD 97-10  | digits          | 2 digits                  | ISO 7064 pure, `number mod 97 = 1`    |
//! | MOD 37-36  | `0`-`9` `A`-`Z` | `0`-`9` `A`-`Z`           | ISO 7064 hybrid                        |
//! | Luhn       | digits          | 1 digit                   | double every second digit from right  |
//! | EAN-13     | 12 digits       | 1 digit                   | weights 1,3,1,3,... mod 10            |
//!
//! The supplementary check symbols (`X` for MOD 11-2, `*` for MOD 37-2) are refused in the
//! body, as ISO 7064 reserves them for the check position. MOD 97-10 is the numeric system
//! of the standard (IBAN's letter-to-digits conversion is not done here).
//!
//! # Identifiers
//!
//! The validators accept what people type and return the compact form (separators removed,
//! upper case); each failure says what and where ([`CheckError`]).
//!
//! * **NIR** (French patient number): 13 characters + a 2-digit key, `key = 97 − (n mod 97)`
//!   where `n` is the 13-character number with the Corsican departments `2A`/`2B` (positions
//!   6-7) replaced by `19`/`18`. Spaces and dots are ignored, any case. Every other position
//!   is a digit; the meaning of the fields (sex, month, commune) is not checked, as in
//!   python-stdnum's `fr.nir`.
//! * **RPPS** (health professional): 11 digits, Luhn. Spaces ignored.
//! * **FINESS** (establishment): 9 digits, Luhn over all nine. Spaces ignored. FINESS numbers
//!   of the Corsican departments are written `2A…`/`2B…`; how their key is computed is not
//!   in any public source we could check, so they are refused (an error naming the
//!   character), never guessed.
//! * **CIP13** (medicine pack): 13 digits, EAN-13 key, and the `34009` prefix **is enforced**
//!   (it is what makes an EAN-13 a CIP13; every one of the 20,739 packs of the ANSM database
//!   has it). Spaces and hyphens ignored.
//! * **E-Rezept ID** (Germany, gematik): `aaa.bbb.bbb.bbb.bbb.cc`, 15 digits + 2 MOD 97-10
//!   check digits over all 17; written with the five dots exactly there, or with none. The
//!   flow type (`160`, `200`, ...) is not restricted.
//! * **EPS prescription ID** (NHS England): `XXXXXX-XXXXXX-XXXXXC`: 6 hex digits, the
//!   6-character prescriber site code (`0`-`9`, `A`-`Z`), 5 hex digits and one MOD 37-2 check
//!   character over those 17, written `+` where ISO 7064 has `*`. With both hyphens there or
//!   none; any case.

use std::fmt;

/// Why a text is not a valid identifier or body. The `Display` text is the user's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Nothing but separators (or nothing at all).
    Empty { what: &'static str },
    /// Wrong number of significant characters.
    Length { what: &'static str, expected: &'static str, got: usize },
    /// A character not allowed where it stands (1-based position in the input).
    Character { what: &'static str, ch: char, position: usize, expected: &'static str },
    /// Separators present but not at their places.
    Layout { what: &'static str, sep: char, position: usize, layout: &'static str },
    /// A CIP13 that does not start with 34009.
    Prefix { what: &'static str, expected: &'static str, found: String },
    /// The check key does not match the rest.
    Key { what: &'static str, found: String },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Empty { what } => write!(f, "empty {what}"),
            CheckError::Length { what, expected, got } => {
                write!(f, "{what} must have {expected}, got {got}")
            }
            CheckError::Character { what, ch, position, expected } => write!(
                f,
                "invalid character {ch:?} at position {position} of {what} (expected {expected})"
            ),
            CheckError::Layout { what, sep, position, layout } => write!(
                f,
                "misplaced or missing {sep:?} at position {position} of {what} (write it \
                 {layout}, or without {sep:?})"
            ),
            CheckError::Prefix { what, expected, found } => {
                write!(f, "{what} must start with {expected}, got {found}")
            }
            CheckError::Key { what, found } => write!(
                f,
                "check key {found:?} does not match the rest of the {what} (mistyped or altered)"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// ISO 7064 value of an alphanumeric character (`0`-`9`, `A`-`Z` upper case only), or 0xFF.
const ALNUM: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};
const ISO37: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

#[inline]
fn all_digits(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_digit)
}

fn char_at(text: &str, byte_index: usize) -> (char, usize) {
    // Byte index -> (character, 1-based character position), for messages.
    let position = text.get(..byte_index).map_or(byte_index, |s| s.chars().count()) + 1;
    let ch = text.get(byte_index..).and_then(|s| s.chars().next()).unwrap_or('\u{FFFD}');
    (ch, position)
}

/// First byte of `body` that `ok` refuses, as a `Character` error.
fn check_chars(
    body: &str,
    what: &'static str,
    expected: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), CheckError> {
    if body.is_empty() {
        return Err(CheckError::Empty { what });
    }
    match body.bytes().position(|b| !ok(b)) {
        None => Ok(()),
        Some(i) => {
            let (ch, position) = char_at(body, i);
            Err(CheckError::Character { what, ch, position, expected })
        }
    }
}

// --- ISO 7064 pure systems: p = (r·p + v) mod m; valid when the sum over body + check is 1.

fn pure_sum(values: impl Iterator<Item = u32>, radix: u32, modulus: u32) -> u32 {
    values.fold(0, |p, v| (p * radix + v) % modulus)
}

/// MOD 11-2 check character (`0`-`9` or `X`) of a body of digits.
pub fn mod11_2_check(body: &str) -> Result<char, CheckError> {
    check_chars(body, "MOD 11-2 body", "a digit", |b| b.is_ascii_digit())?;
    let p = pure_sum(body.bytes().map(|b| u32::from(b - b'0')), 2, 11);
    let c = (12 - 2 * p % 11) % 11; // (1 - 2p) mod 11
    Ok(if c == 10 { 'X' } else { char::from(b'0' + c as u8) })
}

pub fn is_valid_mod11_2(full: &str) -> bool {
    let b = full.as_bytes();
    let Some((&check, body)) = b.split_last() else { return false };
    if body.is_empty() || !all_digits(body) {
        return false;
    }
    let c = match check {
        b'X' => 10,
        b'0'..=b'9' => u32::from(check - b'0'),
        _ => return false,
    };
    (pure_sum(body.iter().map(|&d| u32::from(d - b'0')), 2, 11) * 2 + c) % 11 == 1
}

/// MOD 37-2 check character (`0`-`9`, `A`-`Z` or `*`) of a body of `0`-`9`, `A`-`Z`.
pub fn mod37_2_check(body: &str) -> Result<char, CheckError> {
    check_chars(body, "MOD 37-2 body", "0-9 or A-Z", |b| ALNUM[b as usize] != 0xFF)?;
    Ok(char::from(ISO37[mod37_2_value(body.as_bytes())]))
}

#[inline]
fn mod37_2_value(body: &[u8]) -> usize {
    let p = pure_sum(body.iter().map(|&b| u32::from(ALNUM[b as usize])), 2, 37);
    ((38 - 2 * p % 37) % 37) as usize
}

#[inline]
fn iso37_value(b: u8) -> Option<u32> {
    match ALNUM[b as usize] {
        0xFF if b == b'*' => Some(36),
        0xFF => None,
        v => Some(u32::from(v)),
    }
}

pub fn is_valid_mod37_2(full: &str) -> bool {
    let b = full.as_bytes();
    let Some((&check, body)) = b.split_last() else { return false };
    if body.is_empty() || body.iter().any(|&c| ALNUM[c as usize] == 0xFF) {
        return false;
    }
    iso37_value(check).is_some_and(|c| c as usize == mod37_2_value(body))
}

/// MOD 97-10 check digits (two) of a body of digits.
pub fn mod97_10_check(body: &str) -> Result<String, CheckError> {
    check_chars(body, "MOD 97-10 body", "a digit", |b| b.is_ascii_digit())?;
    let r = pure_sum(body.bytes().map(|b| u32::from(b - b'0')), 10, 97);
    Ok(format!("{:02}", 98 - r * 100 % 97))
}

pub fn is_valid_mod97_10(full: &str) -> bool {
    let b = full.as_bytes();
    b.len() >= 3 && all_digits(b) && pure_sum(b.iter().map(|&d| u32::from(d - b'0')), 10, 97) == 1
}

// --- ISO 7064 hybrid MOD 37-36 (M = 36): p starts at M; s = (p + v) mod M, 0 read as M;
// p = 2s mod (M + 1); the check makes the last s equal to 1.

fn hybrid_p(body: &[u8]) -> u32 {
    body.iter().fold(36, |p, &b| {
        let s = (p + u32::from(ALNUM[b as usize])) % 36;
        let s = if s == 0 { 36 } else { s };
        (2 * s) % 37
    })
}

/// MOD 37-36 check character (`0`-`9` or `A`-`Z`) of a body of `0`-`9`, `A`-`Z`.
pub fn mod37_36_check(body: &str) -> Result<char, CheckError> {
    check_chars(body, "MOD 37-36 body", "0-9 or A-Z", |b| ALNUM[b as usize] != 0xFF)?;
    let p = hybrid_p(body.as_bytes());
    Ok(char::from(ISO37[((37 - p) % 36) as usize]))
}

pub fn is_valid_mod37_36(full: &str) -> bool {
    let b = full.as_bytes();
    let Some((&check, body)) = b.split_last() else { return false };
    if body.is_empty() || b.iter().any(|&c| ALNUM[c as usize] == 0xFF) {
        return false;
    }
    (hybrid_p(body) + u32::from(ALNUM[check as usize])) % 36 == 1
}

// --- Luhn and EAN-13.

/// Luhn sum of digits, the rightmost having weight 1 (`double` = whether it is doubled).
#[inline]
fn luhn_sum(digits: &[u8], double_last: bool) -> u32 {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut s = 0;
    let mut dbl = double_last;
    for &d in digits.iter().rev() {
        let v = usize::from(d - b'0');
        s += if dbl { DOUBLED[v] } else { v as u32 };
        dbl = !dbl;
    }
    s
}

/// Luhn check digit of a body of digits.
pub fn luhn_check(body: &str) -> Result<char, CheckError> {
    check_chars(body, "Luhn body", "a digit", |b| b.is_ascii_digit())?;
    Ok(char::from(b'0' + ((10 - luhn_sum(body.as_bytes(), true) % 10) % 10) as u8))
}

#[inline]
fn luhn_ok(b: &[u8]) -> bool {
    luhn_sum(b, false) % 10 == 0
}

pub fn is_valid_luhn(full: &str) -> bool {
    let b = full.as_bytes();
    b.len() >= 2 && all_digits(b) && luhn_ok(b)
}

#[inline]
fn ean_sum(digits: &[u8]) -> u32 {
    // Weights 3, 1, 3, ... from the right of the body (the check digit weighs 1).
    digits.iter().rev().enumerate().map(|(i, &d)| u32::from(d - b'0') * [3, 1][i % 2]).sum()
}

/// EAN-13 check digit of a 12-digit body.
pub fn ean13_check(body: &str) -> Result<char, CheckError> {
    check_chars(body, "EAN-13 body", "a digit", |b| b.is_ascii_digit())?;
    if body.len() != 12 {
        return Err(CheckError::Length {
            what: "EAN-13 body",
            expected: "12 digits",
            got: body.chars().count(),
        });
    }
    Ok(char::from(b'0' + ((10 - ean_sum(body.as_bytes()) % 10) % 10) as u8))
}

#[inline]
fn ean13_ok(b: &[u8; 13]) -> bool {
    (ean_sum(&b[..12]) + u32::from(b[12] - b'0')) % 10 == 0
}

pub fn is_valid_ean13(full: &str) -> bool {
    let b = full.as_bytes();
    b.len() == 13 && all_digits(b) && ean13_ok(b.try_into().unwrap_or(&[0; 13]))
}

// --- Reading identifiers typed by people.

/// The `N` significant characters of `text` (upper-cased; `ignore` bytes dropped anywhere)
/// with their 1-based positions in the input.
fn significant<const N: usize>(
    text: &str,
    what: &'static str,
    expected_len: &'static str,
    ignore: &[u8],
) -> Result<([u8; N], [usize; N]), CheckError> {
    let mut out = [0u8; N];
    let mut pos = [0usize; N];
    let mut n = 0;
    let mut non_ascii = None;
    for (i, ch) in text.chars().enumerate() {
        if ch.is_ascii() && ignore.contains(&(ch as u8)) {
            continue;
        }
        if n < N {
            // A non-ASCII character is reported once the length is known to be right.
            if !ch.is_ascii() && non_ascii.is_none() {
                non_ascii = Some((ch, i + 1));
            }
            out[n] = (ch as u32 as u8).to_ascii_uppercase();
            pos[n] = i + 1;
        }
        n += 1;
    }
    if n == 0 {
        return Err(CheckError::Empty { what });
    }
    if n != N {
        return Err(CheckError::Length { what, expected: expected_len, got: n });
    }
    if let Some((ch, position)) = non_ascii {
        return Err(CheckError::Character { what, ch, position, expected: "an ASCII character" });
    }
    Ok((out, pos))
}

/// The first position where `text` departs from `layout` (`sep` exactly where the layout has
/// it), when `text` holds `sep` at all.
fn check_layout(
    text: &str,
    what: &'static str,
    sep: u8,
    layout: &'static str,
) -> Result<(), CheckError> {
    let b = text.as_bytes();
    if !b.contains(&sep) {
        return Ok(());
    }
    let l = layout.as_bytes();
    for i in 0..b.len().max(l.len()) {
        let is_sep = b.get(i) == Some(&sep);
        if is_sep != (l.get(i) == Some(&sep)) {
            // `text` is ASCII here (`significant` refused anything else), bytes are chars.
            let position = i.min(b.len()) + 1;
            return Err(CheckError::Layout { what, sep: char::from(sep), position, layout });
        }
    }
    Ok(())
}

fn bad(what: &'static str, pos: usize, text: &str, expected: &'static str) -> CheckError {
    let ch = text.chars().nth(pos - 1).unwrap_or('\u{FFFD}');
    CheckError::Character { what, ch, position: pos, expected }
}

fn digits_only<const N: usize>(
    text: &str,
    what: &'static str,
    b: &[u8; N],
    pos: &[usize; N],
) -> Result<(), CheckError> {
    match b.iter().position(|c| !c.is_ascii_digit()) {
        None => Ok(()),
        Some(i) => Err(bad(what, pos[i], text, "a digit")),
    }
}

fn key_error(what: &'static str, key: &[u8]) -> CheckError {
    CheckError::Key { what, found: key.iter().map(|&c| char::from(c)).collect() }
}

fn into_string(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

const NIR: &str = "NIR";

/// The compact NIR (15 characters, `2A`/`2B` upper case).
pub fn parse_nir(text: &str) -> Result<[u8; 15], CheckError> {
    let (b, pos) = significant::<15>(
        text,
        NIR,
        "15 characters (13 + a 2-digit key; spaces and dots ignored)",
        b" .",
    )?;
    let corsica = b[5] == b'2' && (b[6] == b'A' || b[6] == b'B');
    for i in 0..15 {
        if !(b[i].is_ascii_digit() || (i == 6 && corsica)) {
            let expected =
                if i == 5 || i == 6 { "a digit, or 2A/2B for Corsica" } else { "a digit" };
            return Err(bad(NIR, pos[i], text, expected));
        }
    }
    let mut n: u64 = 0;
    for (i, &c) in b[..13].iter().enumerate() {
        let v = match (i, c) {
            (5, _) if corsica => 1,
            (6, b'A') => 9,
            (6, b'B') => 8,
            _ => u64::from(c - b'0'),
        };
        n = n * 10 + v;
    }
    let key = u64::from(b[13] - b'0') * 10 + u64::from(b[14] - b'0');
    if key != 97 - n % 97 {
        return Err(key_error(NIR, &b[13..]));
    }
    Ok(b)
}

fn luhn_number<const N: usize>(
    text: &str,
    what: &'static str,
    expected_len: &'static str,
) -> Result<[u8; N], CheckError> {
    let (b, pos) = significant::<N>(text, what, expected_len, b" ")?;
    digits_only(text, what, &b, &pos)?;
    if !luhn_ok(&b) {
        return Err(key_error(what, &b[N - 1..]));
    }
    Ok(b)
}

pub fn parse_rpps(text: &str) -> Result<[u8; 11], CheckError> {
    luhn_number::<11>(text, "RPPS number", "11 digits (spaces ignored)")
}

pub fn parse_finess(text: &str) -> Result<[u8; 9], CheckError> {
    luhn_number::<9>(text, "FINESS number", "9 digits (spaces ignored)")
}

pub const CIP13_PREFIX: &str = "34009";

pub fn parse_cip13(text: &str) -> Result<[u8; 13], CheckError> {
    const WHAT: &str = "CIP13";
    let (b, pos) = significant::<13>(text, WHAT, "13 digits (spaces and hyphens ignored)", b" -")?;
    digits_only(text, WHAT, &b, &pos)?;
    if &b[..5] != CIP13_PREFIX.as_bytes() {
        return Err(CheckError::Prefix {
            what: WHAT,
            expected: CIP13_PREFIX,
            found: into_string(&b[..5]),
        });
    }
    if !ean13_ok(&b) {
        return Err(key_error(WHAT, &b[12..]));
    }
    Ok(b)
}

pub fn parse_erezept_id(text: &str) -> Result<[u8; 17], CheckError> {
    const WHAT: &str = "E-Rezept ID";
    const LAYOUT: &str = "aaa.bbb.bbb.bbb.bbb.cc";
    let (b, pos) = significant::<17>(text, WHAT, "17 digits (aaa.bbb.bbb.bbb.bbb.cc)", b".")?;
    check_layout(text, WHAT, b'.', LAYOUT)?;
    digits_only(text, WHAT, &b, &pos)?;
    if pure_sum(b.iter().map(|&d| u32::from(d - b'0')), 10, 97) != 1 {
        return Err(key_error(WHAT, &b[15..]));
    }
    Ok(b)
}

pub fn parse_eps_id(text: &str) -> Result<[u8; 18], CheckError> {
    const WHAT: &str = "EPS prescription ID";
    const LAYOUT: &str = "XXXXXX-XXXXXX-XXXXXC";
    let (b, pos) = significant::<18>(text, WHAT, "18 characters (XXXXXX-XXXXXX-XXXXXC)", b"-")?;
    check_layout(text, WHAT, b'-', LAYOUT)?;
    for (i, &c) in b.iter().enumerate() {
        let (ok, expected) = match i {
            0..=5 | 12..=16 => (c.is_ascii_hexdigit(), "a hexadecimal digit"),
            6..=11 => (ALNUM[c as usize] != 0xFF, "0-9 or A-Z"),
            _ => (ALNUM[c as usize] != 0xFF || c == b'+', "0-9, A-Z or +"),
        };
        if !ok {
            return Err(bad(WHAT, pos[i], text, expected));
        }
    }
    let want = ISO37[mod37_2_value(&b[..17])];
    let found = if b[17] == b'+' { b'*' } else { b[17] };
    if found != want {
        return Err(key_error(WHAT, &b[17..]));
    }
    Ok(b)
}

/// A validator by name, for the bindings' batch forms: compact bytes or the error.
pub fn compact(kind: Kind, text: &str) -> Result<String, CheckError> {
    Ok(match kind {
        Kind::Nir => into_string(&parse_nir(text)?),
        Kind::Rpps => into_string(&parse_rpps(text)?),
        Kind::Finess => into_string(&parse_finess(text)?),
        Kind::Cip13 => into_string(&parse_cip13(text)?),
        Kind::ErezeptId => into_string(&parse_erezept_id(text)?),
        Kind::EpsId => into_string(&parse_eps_id(text)?),
    })
}

pub fn is_valid(kind: Kind, text: &str) -> bool {
    match kind {
        Kind::Nir => parse_nir(text).is_ok(),
        Kind::Rpps => parse_rpps(text).is_ok(),
        Kind::Finess => parse_finess(text).is_ok(),
        Kind::Cip13 => parse_cip13(text).is_ok(),
        Kind::ErezeptId => parse_erezept_id(text).is_ok(),
        Kind::EpsId => parse_eps_id(text).is_ok(),
    }
}

/// The identifiers with a validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nir,
    Rpps,
    Finess,
    Cip13,
    ErezeptId,
    EpsId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ISO 7064 pure system as the standard words it, over values (independent of the above).
    fn iso_pure_valid(values: &[u32], radix: u32, modulus: u32) -> bool {
        let mut p = 0;
        for &v in values {
            p = (p * radix + v) % modulus;
        }
        p == 1
    }

    fn vals(s: &str) -> Vec<u32> {
        s.chars().map(|c| ISO37.iter().position(|&a| char::from(a) == c).unwrap() as u32).collect()
    }

    #[test]
    fn primitives_match_published_examples() {
        // The examples of ISO 7064 / python-stdnum's documentation.
        assert_eq!(mod11_2_check("0794"), Ok('0'));
        assert_eq!(mod11_2_check("079"), Ok('X'));
        assert!(is_valid_mod11_2("079X") && is_valid_mod11_2("07940"));
        assert_eq!(mod37_2_check("G123489654321"), Ok('Y'));
        assert!(is_valid_mod37_2("G123489654321Y"));
        assert_eq!(mod97_10_check("99991234567890121414").as_deref(), Ok("90"));
        assert_eq!(mod97_10_check("4354111611551114").as_deref(), Ok("31"));
        assert!(is_valid_mod97_10("08686001256515001121751"));
        assert_eq!(mod37_36_check("A12425GABC1234002"), Ok('M'));
        assert!(is_valid_mod37_36("A12425GABC1234002M"));
        assert_eq!(luhn_check("7992739871"), Ok('3'));
        assert!(is_valid_luhn("79927398713") && !is_valid_luhn("79927398710"));
        assert_eq!(ean13_check("978047111709"), Ok('4'));
        assert!(is_valid_ean13("9780471117094"));
    }

    #[test]
    fn primitives_refuse_bad_bodies() {
        assert_eq!(mod11_2_check(""), Err(CheckError::Empty { what: "MOD 11-2 body" }));
        assert_eq!(
            mod11_2_check("12X"),
            Err(CheckError::Character {
                what: "MOD 11-2 body",
                ch: 'X',
                position: 3,
                expected: "a digit"
            })
        );
        assert_eq!(
            mod37_2_check("AB*").unwrap_err().to_string(),
            "invalid character '*' at position 3 of MOD 37-2 body (expected 0-9 or A-Z)"
        );
        assert_eq!(
            mod37_2_check("ab").unwrap_err().to_string(),
            "invalid character 'a' at position 1 of MOD 37-2 body (expected 0-9 or A-Z)"
        );
        assert_eq!(
            ean13_check("123").unwrap_err().to_string(),
            "EAN-13 body must have 12 digits, got 3"
        );
        assert_eq!(
            luhn_check("1é").unwrap_err().to_string(),
            "invalid character 'é' at position 2 of Luhn body (expected a digit)"
        );
        for f in [is_valid_mod11_2, is_valid_mod37_2, is_valid_mod97_10, is_valid_mod37_36] {
            assert!(!f("") && !f("1") && !f("\u{0}\u{0}"));
        }
        assert!(!is_valid_luhn("0") && !is_valid_luhn("") && is_valid_luhn("00"));
        assert!(!is_valid_mod11_2("X1") && !is_valid_mod37_2("*1") && !is_valid_mod11_2("07940 "));
        assert!(!is_valid_ean13("978047111709") && !is_valid_ean13("978047111709é"));
    }

    #[test]
    fn nir_examples_and_corsica() {
        assert_eq!(&parse_nir("2 95 10 99 126 111 93").unwrap(), b"295109912611193");
        assert_eq!(&parse_nir("253072b07300470").unwrap(), b"253072B07300470");
        assert_eq!(&parse_nir("2.53.07.2A.073.004.43").unwrap(), b"253072A07300443");
        // 1891275125012 from a textbook: 1891275125012 mod 97 = 15, key 82.
        assert!(parse_nir("189127512501282").is_ok());
        assert_eq!(
            parse_nir("295109912611199").unwrap_err().to_string(),
            "check key \"99\" does not match the rest of the NIR (mistyped or altered)"
        );
        assert_eq!(
            parse_nir("253072C07300443").unwrap_err().to_string(),
            "invalid character 'C' at position 7 of NIR (expected a digit, or 2A/2B for Corsica)"
        );
        assert_eq!(
            parse_nir("253071A07300443").unwrap_err().to_string(),
            "invalid character 'A' at position 7 of NIR (expected a digit, or 2A/2B for Corsica)"
        );
        assert_eq!(
            parse_nir("6546546546546703").unwrap_err().to_string(),
            "NIR must have 15 characters (13 + a 2-digit key; spaces and dots ignored), got 16"
        );
        assert_eq!(parse_nir(" . ").unwrap_err().to_string(), "empty NIR");
        assert_eq!(
            parse_nir("29510991261119é").unwrap_err().to_string(),
            "invalid character 'é' at position 15 of NIR (expected an ASCII character)"
        );
    }

    #[test]
    fn french_professional_and_pack_numbers() {
        // AP-HP's and Hôpital européen Georges-Pompidou's FINESS numbers.
        assert_eq!(&parse_finess("750712184").unwrap(), b"750712184");
        assert!(parse_finess("750 803 447").is_ok());
        assert_eq!(
            parse_finess("750712185").unwrap_err().to_string(),
            "check key \"5\" does not match the rest of the FINESS number (mistyped or altered)"
        );
        assert_eq!(
            parse_finess("2A0000014").unwrap_err().to_string(),
            "invalid character 'A' at position 2 of FINESS number (expected a digit)"
        );
        let rpps = format!("1000000000{}", luhn_check("1000000000").unwrap());
        assert_eq!(rpps, "10000000009");
        assert_eq!(&parse_rpps("100 000 000 09").unwrap(), b"10000000009");
        assert_eq!(
            parse_rpps("1000000000").unwrap_err().to_string(),
            "RPPS number must have 11 digits (spaces ignored), got 10"
        );
        // Real packs from the ANSM database.
        assert_eq!(&parse_cip13("3400949497294").unwrap(), b"3400949497294");
        assert!(parse_cip13("3 400 933 208 639").is_ok());
        assert!(parse_cip13("3400-936963504").is_ok());
        assert_eq!(
            parse_cip13("9780471117094").unwrap_err().to_string(),
            "CIP13 must start with 34009, got 97804"
        );
        assert_eq!(
            parse_cip13("3400949497295").unwrap_err().to_string(),
            "check key \"5\" does not match the rest of the CIP13 (mistyped or altered)"
        );
    }

    #[test]
    fn erezept_and_eps_ids() {
        let body = "160000000000123";
        let key = mod97_10_check(body).unwrap();
        let dotted = format!("160.000.000.000.123.{key}");
        assert_eq!(into_string(&parse_erezept_id(&dotted).unwrap()), format!("{body}{key}"));
        assert!(parse_erezept_id(&format!("{body}{key}")).is_ok());
        assert_eq!(
            parse_erezept_id(&format!("1600.00.000.000.123.{key}")).unwrap_err().to_string(),
            "misplaced or missing '.' at position 4 of E-Rezept ID (write it \
             aaa.bbb.bbb.bbb.bbb.cc, or without '.')"
        );
        assert_eq!(
            parse_erezept_id("160.000.000.000.123").unwrap_err().to_string(),
            "E-Rezept ID must have 17 digits (aaa.bbb.bbb.bbb.bbb.cc), got 15"
        );
        // EPS: the check is MOD 37-2 over the 17 characters, '+' standing for '*'.
        let mut found_plus = false;
        for seq in 0..2000u32 {
            let body = format!("A1B2C3A83008{seq:05X}");
            let c = mod37_2_check(&body).unwrap();
            let c = if c == '*' { '+' } else { c };
            found_plus |= c == '+';
            let text = format!("{}-{}-{}{c}", &body[..6], &body[6..12], &body[12..]);
            assert_eq!(into_string(&parse_eps_id(&text).unwrap()), format!("{body}{c}"));
            assert!(parse_eps_id(&text.to_lowercase().replace('-', "")).is_ok());
        }
        assert!(found_plus);
        assert_eq!(
            parse_eps_id("G1B2C3-A83008-000001").unwrap_err().to_string(),
            "invalid character 'G' at position 1 of EPS prescription ID (expected a hexadecimal \
             digit)"
        );
        assert!(matches!(parse_eps_id("A1B2C3A83008-000001"), Err(CheckError::Layout { .. })));
    }

    proptest! {
        #[test]
        fn pure_systems_follow_the_standard(body in "[0-9A-Z]{1,30}", c in 0u32..37) {
            let full = format!("{body}{}", char::from(ISO37[c as usize]));
            prop_assert_eq!(is_valid_mod37_2(&full), iso_pure_valid(&vals(&full), 2, 37));
            let check = mod37_2_check(&body).unwrap();
            let t = format!("{body}{check}");
            prop_assert!(is_valid_mod37_2(&t));
        }

        #[test]
        fn numeric_systems_follow_the_standard(body in "[0-9]{1,30}", c in 0u32..100) {
            let full = format!("{body}{c:02}");
            prop_assert_eq!(is_valid_mod97_10(&full), iso_pure_valid(&vals(&full), 10, 97));
            let k = mod97_10_check(&body).unwrap();
            let t = format!("{body}{k}");
            prop_assert!(is_valid_mod97_10(&t));
            let x = mod11_2_check(&body).unwrap();
            let t = format!("{body}{x}");
            prop_assert!(is_valid_mod11_2(&t));
            let l = luhn_check(&body).unwrap();
            let t = format!("{body}{l}");
            prop_assert!(is_valid_luhn(&t));
            let h = mod37_36_check(&body).unwrap();
            let t = format!("{body}{h}");
            prop_assert!(is_valid_mod37_36(&t));
        }

        #[test]
        fn pure_systems_catch_every_single_and_transposition_error(body in "[0-9A-Z]{2,20}") {
            let c = mod37_2_check(&body).unwrap();
            let full: Vec<u8> = format!("{body}{c}").into_bytes();
            for i in 0..full.len() {
                for &a in ISO37.iter() {
                    if a != full[i] && (a != b'*' || i + 1 == full.len()) {
                        let mut m = full.clone();
                        m[i] = a;
                        prop_assert!(!is_valid_mod37_2(std::str::from_utf8(&m).unwrap()));
                    }
                }
                for gap in [1, 2] {
                    if i + gap < full.len() && full[i] != full[i + gap] {
                        let mut m = full.clone();
                        m.swap(i, i + gap);
                        prop_assert!(!is_valid_mod37_2(std::str::from_utf8(&m).unwrap()));
                    }
                }
            }
        }

        #[test]
        fn nir_round_trips(sex in 1u8..=2, rest in "[0-9]{12}", corsica in 0u8..3) {
            let mut n13 = format!("{sex}{rest}");
            if corsica > 0 {
                n13.replace_range(5..7, if corsica == 1 { "2A" } else { "2B" });
            }
            let num: u64 = n13.replace("2A", "19").replace("2B", "18").parse().unwrap();
            let full = format!("{n13}{:02}", 97 - num % 97);
            prop_assert_eq!(into_string(&parse_nir(&full).unwrap()), full.clone());
            let wrong = format!("{n13}{:02}", (97 - num % 97) % 97 + 1);
            let is_key_error = matches!(parse_nir(&wrong), Err(CheckError::Key { .. }));
            prop_assert!(is_key_error);
        }

        #[test]
        fn validators_never_panic(s in "\\PC{0,40}") {
            for k in [Kind::Nir, Kind::Rpps, Kind::Finess, Kind::Cip13, Kind::ErezeptId,
                      Kind::EpsId] {
                let r = compact(k, &s);
                prop_assert_eq!(r.is_ok(), is_valid(k, &s));
                if let Err(e) = r {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
