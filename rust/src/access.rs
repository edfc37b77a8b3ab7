//! Access codes: the secret that, with the ID, opens a prescription.
//!
//! The ID is not a secret (it is time-ordered and printed in clear); the access code is.
//! It is 128 bits from the operating system's CSPRNG, fresh per prescription, carried inside
//! the signed QR token and printed under it for manual entry. Like the German E-Rezept
//! AccessCode, it is checked by the service; the store keeps only its SHA-256 digest
//! (domain-separated), compares digests in constant time, and never holds the code itself.
//!
//! Text form, for typing by hand: the 128 bits as 26 Crockford Base32 characters (the first
//! one is 0..7, as 26 × 5 = 130 bits), grouped by four with hyphens:
//! `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX`. Input is case-insensitive, hyphens and spaces are
//! ignored and `O`/`I`/`L` read as `0`/`1`, as for IDs.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const TEXT_CHARS: usize = 26;
/// Grouped text length: 26 characters and 6 hyphens.
pub const TEXT_LEN: usize = TEXT_CHARS + 6;
const MAX_INPUT_LEN: usize = 128;
const DIGEST_DOMAIN: &[u8] = b"ordonum/access-code/v1\0";

/// Why a text is not an access code. The `Display` text is the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCodeError {
    Length(usize),
    Character { ch: char, position: usize },
}

impl fmt::Display for AccessCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessCodeError::Length(n) => write!(
                f,
                "an access code has {TEXT_CHARS} characters (hyphens and spaces ignored), got {n}"
            ),
            AccessCodeError::Character { ch, position } => {
                write!(f, "invalid character {ch:?} at position {position} of the access code")
            }
        }
    }
}

impl std::error::Error for AccessCodeError {}

/// A 128-bit access code. `Debug` does not print it.
#[derive(Clone, Copy)]
pub struct AccessCode([u8; 16]);

/// SHA-256 of an access code, what the store keeps.
pub type AccessDigest = [u8; 32];

impl AccessCode {
    pub const BYTES: usize = 16;

    /// A fresh code from the OS CSPRNG.
    pub fn generate() -> Result<AccessCode, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(AccessCode(b))
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> AccessCode {
        AccessCode(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn digest(&self) -> AccessDigest {
        let mut h = Sha256::new();
        h.update(DIGEST_DOMAIN);
        h.update(self.0);
        h.finalize().into()
    }

    /// Constant-time comparison of this code's digest with a stored digest.
    pub fn matches(&self, digest: &AccessDigest) -> bool {
        self.digest().ct_eq(digest).into()
    }

    pub fn text(&self) -> String {
        let v = u128::from_be_bytes(self.0);
        let mut out = String::with_capacity(TEXT_LEN);
        for i in 0..TEXT_CHARS {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            let d = ((v >> (5 * (TEXT_CHARS - 1 - i))) & 31) as usize;
            out.push(CROCKFORD[d] as char);
        }
        out
    }

    pub fn parse(text: &str) -> Result<AccessCode, AccessCodeError> {
        if text.len() > MAX_INPUT_LEN {
            return Err(AccessCodeError::Length(text.chars().count()));
        }
        let mut v: u128 = 0;
        let mut n = 0usize;
        for (pos, ch) in text.chars().enumerate() {
            if ch == '-' || ch == ' ' {
                continue;
            }
            let d = decode(ch).ok_or(AccessCodeError::Character { ch, position: pos + 1 })?;
            // The first character carries 3 bits only: 26 × 5 = 130.
            if n == 0 && d > 7 {
                return Err(AccessCodeError::Character { ch, position: pos + 1 });
            }
            n += 1;
            if n <= TEXT_CHARS {
                v = (v << 5) | u128::from(d);
            }
        }
        if n != TEXT_CHARS {
            return Err(AccessCodeError::Length(n));
        }
        Ok(AccessCode(v.to_be_bytes()))
    }
}

fn decode(ch: char) -> Option<u8> {
    let c = u8::try_from(ch).ok()?.to_ascii_uppercase();
    match c {
        b'O' => Some(0),
        b'I' | b'L' => Some(1),
        _ => CROCKFORD.iter().position(|&a| a == c).map(|p| p as u8),
    }
}

impl fmt::Debug for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessCode(…)")
    }
}

impl PartialEq for AccessCode {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for AccessCode {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_codes_differ_and_round_trip() {
        let a = AccessCode::generate().unwrap();
        let b = AccessCode::generate().unwrap();
        assert_ne!(a, b);
        let t = a.text();
        assert_eq!(t.len(), TEXT_LEN);
        assert_eq!(AccessCode::parse(&t), Ok(a));
        assert_eq!(AccessCode::parse(&t.to_lowercase().replace('-', " ")), Ok(a));
        assert!(a.matches(&a.digest()));
        assert!(!b.matches(&a.digest()));
        assert_eq!(format!("{a:?}"), "AccessCode(…)");
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        assert_eq!(AccessCode::parse(""), Err(AccessCodeError::Length(0)));
        assert_eq!(AccessCode::parse("0123"), Err(AccessCodeError::Length(4)));
        let max = "7ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ";
        assert_eq!(AccessCode::parse(max).unwrap().as_bytes(), &[0xFF; 16]);
        assert_eq!(
            AccessCode::parse("8ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ"),
            Err(AccessCodeError::Character { ch: '8', position: 1 })
        );
        assert_eq!(
            AccessCode::parse("0ZZZ-ZUZZ"),
            Err(AccessCodeError::Character { ch: 'U', position: 7 })
        );
        assert_eq!(AccessCode::parse(&"0".repeat(500)), Err(AccessCodeError::Length(500)));
    }

    proptest! {
        #[test]
        fn any_code_round_trips(b: [u8; 16]) {
            let c = AccessCode::from_bytes(b);
            prop_assert_eq!(AccessCode::parse(&c.text()), Ok(c));
        }
    }
}
