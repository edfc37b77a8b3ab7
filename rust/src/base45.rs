//! Base45 (RFC 9285): bytes as text made only of the 45 symbols of the QR alphanumeric mode.
//!
//! Each pair of bytes `(a, b)` is the number `n = a·256 + b` written as three symbols
//! `c d e` with `n = c + 45·d + 45²·e`; a last lone byte is written as two symbols. So
//! `k` bytes take `3·(k / 2) + 2·(k % 2)` symbols, and a QR code stores 11 bits per two
//! symbols: about 2.7 % more than the bytes themselves, against 33 % for Base64 (which the
//! alphanumeric mode cannot hold anyway).
//!
//! Decoding is strict, so every byte string has exactly one text: symbols outside the
//! alphabet (lowercase letters included), a length of the form `3k + 1`, and a group whose
//! value does not fit its bytes (over 65535 for three symbols, over 255 for two) are errors.

use std::fmt;

pub const ALPHABET: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

/// Symbol value of each byte, or 0xFF.
const DECODE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 45 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Why a text is not Base45. Positions are 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base45Error {
    /// The number of symbols leaves one alone after the groups of three.
    Length(usize),
    Character {
        ch: char,
        position: usize,
    },
    /// The group starting at `position` encodes a value too large for its bytes.
    Overflow {
        position: usize,
    },
}

impl fmt::Display for Base45Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base45Error::Length(n) => {
                write!(f, "Base45 length {n} is impossible (a multiple of 3, plus 0 or 2)")
            }
            Base45Error::Character { ch, position } => {
                write!(f, "invalid Base45 character {ch:?} at position {position}")
            }
            Base45Error::Overflow { position } => {
                write!(f, "the Base45 group at position {position} is out of range")
            }
        }
    }
}

impl std::error::Error for Base45Error {}

/// Length of the Base45 text of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    3 * (n / 2) + 2 * (n % 2)
}

/// Appends the Base45 text of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(encoded_len(bytes.len()));
    let mut pairs = bytes.chunks_exact(2);
    for p in &mut pairs {
        let n = (usize::from(p[0]) << 8) | usize::from(p[1]);
        out.push(ALPHABET[n % 45] as char);
        out.push(ALPHABET[(n / 45) % 45] as char);
        out.push(ALPHABET[n / 2025] as char);
    }
    if let [b] = pairs.remainder() {
        let n = usize::from(*b);
        out.push(ALPHABET[n % 45] as char);
        out.push(ALPHABET[n / 45] as char);
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    encode_into(bytes, &mut s);
    s
}

/// Decodes a Base45 text (strictly, see the module doc).
pub fn decode(text: &str) -> Result<Vec<u8>, Base45Error> {
    let b = text.as_bytes();
    let value = |i: usize| -> Result<u32, Base45Error> {
        match DECODE[usize::from(b[i])] {
            0xFF => {
                // Report the character, not the byte, and its position in characters.
                let position = text[..i].chars().count() + 1;
                let ch = text[i..].chars().next().unwrap_or('\u{FFFD}');
                Err(Base45Error::Character { ch, position })
            }
            v => Ok(u32::from(v)),
        }
    };
    // Check the characters first, so a non-ASCII text is reported by its character.
    for i in 0..b.len() {
        value(i)?;
    }
    if b.len() % 3 == 1 {
        return Err(Base45Error::Length(b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 3 * 2 + 1);
    let mut i = 0;
    while i + 3 <= b.len() {
        let n = value(i)? + 45 * value(i + 1)? + 2025 * value(i + 2)?;
        if n > 0xFFFF {
            return Err(Base45Error::Overflow { position: i + 1 });
        }
        out.extend_from_slice(&(n as u16).to_be_bytes());
        i += 3;
    }
    if i + 2 == b.len() {
        let n = value(i)? + 45 * value(i + 1)?;
        if n > 0xFF {
            return Err(Base45Error::Overflow { position: i + 1 });
        }
        out.push(n as u8);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_9285_vectors() {
        // RFC 9285, sections 4.3 and 4.4.
        assert_eq!(encode(b"AB"), "BB8");
        assert_eq!(encode(b"Hello!!"), "%69 VD92EX0");
        assert_eq!(encode(b"base-45"), "UJCLQE7W581");
        assert_eq!(decode("QED8WEX0").unwrap(), b"ietf!");
        assert_eq!(decode("BB8").unwrap(), b"AB");
        assert_eq!(decode("%69 VD92EX0").unwrap(), b"Hello!!");
        assert_eq!(encode(b""), "");
        assert_eq!(decode("").unwrap(), b"");
    }

    #[test]
    fn extremes_and_errors() {
        assert_eq!(encode(&[0xFF, 0xFF]), "FGW");
        assert_eq!(encode(&[0xFF]), "U5");
        assert_eq!(decode("FGW").unwrap(), [0xFF, 0xFF]);
        assert_eq!(decode("GGW"), Err(Base45Error::Overflow { position: 1 }));
        assert_eq!(decode("AAAV5"), Err(Base45Error::Overflow { position: 4 }));
        assert_eq!(decode("ABCD"), Err(Base45Error::Length(4)));
        assert_eq!(decode("A"), Err(Base45Error::Length(1)));
        assert_eq!(decode("BB8bb8"), Err(Base45Error::Character { ch: 'b', position: 4 }));
        assert_eq!(decode("BBé"), Err(Base45Error::Character { ch: 'é', position: 3 }));
        assert_eq!(
            Base45Error::Character { ch: 'b', position: 4 }.to_string(),
            "invalid Base45 character 'b' at position 4"
        );
    }

    /// The RFC's definition, written independently of the table-driven code above.
    fn reference_encode(bytes: &[u8]) -> String {
        let sym = |v: u32| char::from(ALPHABET[v as usize]);
        let mut s = String::new();
        for chunk in bytes.chunks(2) {
            if chunk.len() == 2 {
                let n = u32::from(chunk[0]) * 256 + u32::from(chunk[1]);
                let (e, rest) = (n / (45 * 45), n % (45 * 45));
                s.extend([sym(rest % 45), sym(rest / 45), sym(e)]);
            } else {
                let n = u32::from(chunk[0]);
                s.extend([sym(n % 45), sym(n / 45)]);
            }
        }
        s
    }

    proptest! {
        #[test]
        fn round_trips_and_matches_the_definition(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = encode(&bytes);
            prop_assert_eq!(t.len(), encoded_len(bytes.len()));
            prop_assert_eq!(&t, &reference_encode(&bytes));
            prop_assert_eq!(decode(&t), Ok(bytes));
        }

        #[test]
        fn every_accepted_text_is_canonical(text in "[0-9A-Z $%*+\\-./:]{0,30}") {
            // Decoding never panics; when it succeeds, encoding gives the same text back.
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(&bytes), text);
            }
        }
    }
}
