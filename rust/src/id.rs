//! Prescription identifiers: time-ordered, coordination-free, with a check character.
//!
//! # Format
//!
//! An ID is 80 bits, stored big-endian in 10 bytes (so byte order = numeric order):
//!
//! ```text
//!  79                   38 37            16 15          0
//! +-----------------------+----------------+-------------+
//! | timestamp_ms (42 bits)|  node (22 bits)|  seq (16 b) |
//! +-----------------------+----------------+-------------+
//! ```
//!
//! * `timestamp_ms`: milliseconds since the ordonum epoch **2020-01-01T00:00:00Z**
//!   (Unix 1_577_836_800_000 ms); 2^42 ms is 139 years, so IDs run out in May 2159.
//! * `node`: the issuer, 0..=4_194_303 (2^22). Each prescriber-software installation or
//!   service instance owns one; IDs are unique without coordination when nodes are.
//! * `seq`: 65,536 IDs per millisecond per generator. When a millisecond is exhausted the
//!   generator borrows the next one (the timestamp runs slightly ahead of the clock)
//!   instead of failing or repeating.
//!
//! # Text
//!
//! The 80 bits are written as 16 Crockford Base32 characters (5 bits each, most significant
//! first; alphabet `0123456789ABCDEFGHJKMNPQRSTVWXYZ`, which is in ASCII order, so compact
//! strings sort like the numbers), followed by one **ISO/IEC 7064 MOD 37-2** check
//! character: 17 characters in all, displayed as `XXXX-XXXX-XXXX-XXXX-C`.
//!
//! The check character is computed over the 16 body *characters*, each read with its value
//! in the ISO 7064 alphanumeric alphabet `0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*`
//! (`'0'..'9'` = 0..9, `'A'..'Z'` = 10..35, `'*'` = 36; note this is *not* the Crockford
//! value of the letter): `s = 0; for v in body: s = (2·s + v) mod 37`, and the check is the
//! symbol of value `(1 − 2·s) mod 37`. The compact 17-character form is therefore valid for
//! any ISO 7064 MOD 37-2 implementation (python-stdnum's `mod_37_2.is_valid` included). As a
//! pure system it detects every single substitution, every adjacent transposition, every twin
//! error and every jump transposition.
//!
//! MOD 37-2 can yield 37 symbols, five of which Crockford excludes from bodies (`I`, `L`,
//! `O`, `U`, `*`). ordonum **never issues such an ID**: the generator skips the sequence
//! numbers whose check character would be one of those (5 bodies in 37), and the parser
//! rejects them. So every character of an ID is a Crockford symbol, and Crockford's
//! normalisation (`O`→`0`, `I`/`L`→`1`, any case) applies to all 17 positions, the check
//! included. Skipping, rather than printing the letter and reading it literally, keeps the
//! guarantee whole: were an `I` check allowed, a transposition moving it into the body would
//! be read as `1` there, and one such error in 37 would pass. Hyphens and spaces anywhere
//! are ignored.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time of the ID epoch, 2020-01-01T00:00:00Z, in milliseconds.
pub const EPOCH_UNIX_MS: u64 = 1_577_836_800_000;
pub const TIMESTAMP_BITS: u32 = 42;
pub const NODE_BITS: u32 = 22;
pub const SEQ_BITS: u32 = 16;
pub const MAX_TIMESTAMP: u64 = (1 << TIMESTAMP_BITS) - 1;
pub const MAX_NODE: u32 = (1 << NODE_BITS) - 1;
pub const MAX_SEQ: u16 = u16::MAX;

/// Length of the body in Crockford characters, of the compact text, of the grouped text.
pub const BODY_LEN: usize = 16;
pub const COMPACT_LEN: usize = BODY_LEN + 1;
pub const TEXT_LEN: usize = COMPACT_LEN + 4;
/// Input longer than this is rejected before it is scanned (hyphens and spaces allowed).
pub const MAX_INPUT_LEN: usize = 64;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ISO7064_37: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

/// Crockford value of an input byte (normalising case and O/I/L), or 0xFF.
const CROCKFORD_DECODE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 32 {
        let c = CROCKFORD[i];
        t[c as usize] = i as u8;
        t[c.to_ascii_lowercase() as usize] = i as u8;
        i += 1;
    }
    t[b'O' as usize] = 0;
    t[b'o' as usize] = 0;
    t[b'I' as usize] = 1;
    t[b'i' as usize] = 1;
    t[b'L' as usize] = 1;
    t[b'l' as usize] = 1;
    t
};

/// ISO 7064 value of the Crockford symbol with a given 5-bit value.
const CROCKFORD_ISO: [u8; 32] = {
    let mut t = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = iso_value(CROCKFORD[i]);
        i += 1;
    }
    t
};

/// Whether the ISO 7064 check value is written with a Crockford symbol (issuable).
const CROCKFORD_CHECK: [bool; 37] = {
    let mut t = [false; 37];
    let mut i = 0;
    while i < 32 {
        t[CROCKFORD_ISO[i] as usize] = true;
        i += 1;
    }
    t
};

/// MOD 37-2 over 16 body values, `s = (2·s + v) mod 37` folded into one weighted sum:
/// `s = Σ vᵢ·2^(15−i) mod 37` (the sum stays below 36·2^16, one division instead of 16).
const BODY_WEIGHTS: [u32; BODY_LEN] = {
    let mut w = [0u32; BODY_LEN];
    let mut i = 0;
    while i < BODY_LEN {
        w[i] = 1 << (BODY_LEN - 1 - i);
        i += 1;
    }
    w
};

const fn iso_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'a'..=b'z' => c - b'a' + 10,
        b'*' => 36,
        _ => 0xFF,
    }
}

/// Why a text is not a valid ID. The `Display` text is the message users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Empty,
    /// Number of significant characters (hyphens and spaces removed), or input byte length
    /// when the input is longer than [`MAX_INPUT_LEN`].
    Length(usize),
    /// A character that is not allowed, with its 1-based position in the input.
    Character {
        ch: char,
        position: usize,
    },
    /// The check character does not match the body.
    Check {
        found: char,
    },
    /// An ID whose check character is not a Crockford symbol: valid MOD 37-2, never issued.
    Unissued,
    /// A node number outside 0..=MAX_NODE.
    Node(u64),
    /// The clock (or the borrowed milliseconds) ran past 2159: no more IDs can be made.
    Exhausted,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("empty ID"),
            IdError::Length(n) => write!(
                f,
                "an ID has {COMPACT_LEN} characters (16 + 1 check character, hyphens and spaces \
                 ignored), got {n}"
            ),
            IdError::Character { ch, position } => {
                write!(f, "invalid character {ch:?} at position {position}")
            }
            IdError::Check { found } => write!(
                f,
                "check character {found:?} does not match the rest of the ID (mistyped or \
                 altered ID)"
            ),
            IdError::Unissued => f.write_str(
                "not an ordonum ID: its check character would be I, L, O, U or *, which ordonum \
                 never issues",
            ),
            IdError::Node(n) => write!(f, "node must be between 0 and {MAX_NODE}, got {n}"),
            IdError::Exhausted => f.write_str("ID timestamp range exhausted (past year 2159)"),
        }
    }
}

impl std::error::Error for IdError {}

/// A prescription ID: 80 bits, big-endian. Ordering is creation order within a generator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RxId([u8; 10]);

impl RxId {
    pub const BYTES: usize = 10;

    pub fn from_parts(timestamp_ms: u64, node: u32, seq: u16) -> Result<RxId, IdError> {
        if node > MAX_NODE {
            return Err(IdError::Node(node.into()));
        }
        if timestamp_ms > MAX_TIMESTAMP {
            return Err(IdError::Exhausted);
        }
        Ok(Self::pack(timestamp_ms, node, seq))
    }

    #[inline]
    fn pack(timestamp_ms: u64, node: u32, seq: u16) -> RxId {
        let v: u128 = (u128::from(timestamp_ms) << (NODE_BITS + SEQ_BITS))
            | (u128::from(node) << SEQ_BITS)
            | u128::from(seq);
        let be = v.to_be_bytes();
        let mut b = [0u8; 10];
        b.copy_from_slice(&be[6..]);
        RxId(b)
    }

    #[inline]
    pub const fn from_bytes(bytes: [u8; 10]) -> RxId {
        RxId(bytes)
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }

    #[inline]
    fn value(&self) -> u128 {
        let mut be = [0u8; 16];
        be[6..].copy_from_slice(&self.0);
        u128::from_be_bytes(be)
    }

    /// The top and bottom 40 bits, each 8 Crockford characters.
    #[inline]
    fn halves(&self) -> (u64, u64) {
        let v = self.value();
        ((v >> 40) as u64, (v as u64) & HALF_MASK)
    }

    /// Milliseconds since [`EPOCH_UNIX_MS`].
    pub fn timestamp_ms(&self) -> u64 {
        (self.value() >> (NODE_BITS + SEQ_BITS)) as u64
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        self.timestamp_ms() + EPOCH_UNIX_MS
    }

    pub fn node(&self) -> u32 {
        ((self.value() >> SEQ_BITS) as u32) & MAX_NODE
    }

    pub fn sequence(&self) -> u16 {
        self.value() as u16
    }

    /// Whether the check character is a Crockford symbol: only such IDs are issued and parsed.
    pub fn is_issuable(&self) -> bool {
        let (hi, lo) = self.halves();
        let sum = encode_half(hi, 0).1 + encode_half(lo, 8).1;
        CROCKFORD_CHECK[check_value(sum % 37)]
    }

    /// The 17-character compact text (body + check character), as ASCII bytes.
    #[inline]
    pub fn compact_bytes(&self) -> [u8; COMPACT_LEN] {
        let (hi, lo) = self.halves();
        let ((a, sa), (b, sb)) = (encode_half(hi, 0), encode_half(lo, 8));
        let mut out = [0u8; COMPACT_LEN];
        out[..8].copy_from_slice(&a);
        out[8..BODY_LEN].copy_from_slice(&b);
        out[BODY_LEN] = ISO7064_37[check_value((sa + sb) % 37)];
        out
    }

    /// The canonical grouped text `XXXX-XXXX-XXXX-XXXX-C`, as ASCII bytes.
    #[inline]
    pub fn text_bytes(&self) -> [u8; TEXT_LEN] {
        let c = self.compact_bytes();
        let mut out = [b'-'; TEXT_LEN];
        for (i, &b) in c.iter().enumerate() {
            out[i + i / 4] = b;
        }
        out
    }

    pub fn compact(&self) -> String {
        ascii_string(&self.compact_bytes())
    }

    pub fn text(&self) -> String {
        ascii_string(&self.text_bytes())
    }

    /// Parses an ID in any case, with or without hyphens and spaces (see the module doc).
    pub fn parse(text: &str) -> Result<RxId, IdError> {
        if let Some(id) = Self::parse_fast(text.as_bytes()) {
            return Ok(id);
        }
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(IdError::Empty);
        }
        if bytes.len() > MAX_INPUT_LEN {
            return Err(IdError::Length(text.chars().count()));
        }
        // Significant characters with their 1-based position in the input.
        let mut sig = [(0u8, 0usize); COMPACT_LEN];
        let mut n = 0usize;
        for (pos, ch) in text.chars().enumerate() {
            if ch == '-' || ch == ' ' {
                continue;
            }
            if !ch.is_ascii() {
                return Err(IdError::Character { ch, position: pos + 1 });
            }
            if n < COMPACT_LEN {
                sig[n] = (ch as u8, pos + 1);
            }
            n += 1;
        }
        if n == 0 {
            return Err(IdError::Empty);
        }
        if n != COMPACT_LEN {
            return Err(IdError::Length(n));
        }
        let mut v: u128 = 0;
        let mut s: u32 = 0;
        for &(b, position) in &sig[..BODY_LEN] {
            let d = CROCKFORD_DECODE[b as usize];
            if d == 0xFF {
                return Err(IdError::Character { ch: b as char, position });
            }
            v = (v << 5) | u128::from(d);
            s = (2 * s + u32::from(CROCKFORD_ISO[d as usize])) % 37;
        }
        let (cb, cpos) = sig[BODY_LEN];
        let cd = CROCKFORD_DECODE[cb as usize];
        if cd == 0xFF {
            return Err(IdError::Character { ch: cb as char, position: cpos });
        }
        let expected = check_value(s);
        if !CROCKFORD_CHECK[expected] {
            return Err(IdError::Unissued);
        }
        if usize::from(CROCKFORD_ISO[cd as usize]) != expected {
            return Err(IdError::Check { found: cb.to_ascii_uppercase() as char });
        }
        let be = v.to_be_bytes();
        let mut b = [0u8; 10];
        b.copy_from_slice(&be[6..]);
        Ok(RxId(b))
    }

    /// The two layouts ordonum prints (compact, or hyphens at 5, 10, 15, 20), valid: the
    /// common case, without the position bookkeeping. `None` sends the text to the full
    /// parser, which accepts the other spellings and says what is wrong.
    #[inline]
    fn parse_fast(b: &[u8]) -> Option<RxId> {
        let mut sig = [0u8; COMPACT_LEN];
        match b.len() {
            COMPACT_LEN => sig.copy_from_slice(b),
            TEXT_LEN => {
                if [b[4], b[9], b[14], b[19]] != [b'-'; 4] {
                    return None;
                }
                for (i, c) in sig.iter_mut().enumerate() {
                    *c = b[i + i / 4];
                }
            }
            _ => return None,
        }
        let mut v: u128 = 0;
        let mut sum: u32 = 0;
        for (i, &c) in sig[..BODY_LEN].iter().enumerate() {
            let d = CROCKFORD_DECODE[c as usize];
            if d == 0xFF {
                return None;
            }
            v = (v << 5) | u128::from(d);
            sum += BODY_WEIGHTS[i] * u32::from(CROCKFORD_ISO[d as usize]);
        }
        let cd = CROCKFORD_DECODE[sig[BODY_LEN] as usize];
        let expected = check_value(sum % 37);
        if cd == 0xFF
            || !CROCKFORD_CHECK[expected]
            || usize::from(CROCKFORD_ISO[cd as usize]) != expected
        {
            return None;
        }
        let be = v.to_be_bytes();
        let mut out = [0u8; 10];
        out.copy_from_slice(&be[6..]);
        Some(RxId(out))
    }

    pub fn is_valid(text: &str) -> bool {
        Self::parse_fast(text.as_bytes()).is_some() || Self::parse(text).is_ok()
    }
}

const HALF_MASK: u64 = (1 << 40) - 1;

/// The 8 Crockford characters of 40 bits and their part of the MOD 37-2 weighted sum
/// (`first` = index of the first character in the body).
#[inline]
fn encode_half(x: u64, first: usize) -> ([u8; 8], u32) {
    let mut out = [0u8; 8];
    let mut sum = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        let d = ((x >> (35 - 5 * i)) & 31) as usize;
        *slot = CROCKFORD[d];
        sum += BODY_WEIGHTS[first + i] * u32::from(CROCKFORD_ISO[d]);
    }
    (out, sum)
}

#[inline]
fn check_value(s: u32) -> usize {
    // (1 - 2s) mod 37 for s in 0..37, kept non-negative: 75 = 1 + 2·37.
    ((75 - 2 * s) % 37) as usize
}

fn ascii_string(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

impl fmt::Display for RxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Debug for RxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RxId({})", self.text())
    }
}

impl std::str::FromStr for RxId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RxId::parse(s)
    }
}

/// Current Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Makes IDs for one node. Lock-free and thread-safe: the last issued `(timestamp, seq)`
/// pair is one atomic `u64` (`timestamp << 16 | seq`), and every new ID is
/// `max(last + 1, now << 16)`, installed with a compare-and-swap. So IDs strictly increase
/// even when the wall clock steps back (the generator keeps counting from `last`), and a
/// full millisecond carries into the next one.
#[derive(Debug)]
pub struct IdGenerator {
    node: u32,
    last: AtomicU64,
}

impl IdGenerator {
    pub fn new(node: u64) -> Result<IdGenerator, IdError> {
        if node > u64::from(MAX_NODE) {
            return Err(IdError::Node(node));
        }
        Ok(IdGenerator { node: node as u32, last: AtomicU64::new(0) })
    }

    pub fn node(&self) -> u32 {
        self.node
    }

    /// Reserves `n >= 1` consecutive `(timestamp << 16 | seq)` values at clock reading
    /// `unix_ms`; returns the first.
    fn reserve(&self, n: u64, unix_ms: u64) -> Result<u64, IdError> {
        let now = unix_ms.saturating_sub(EPOCH_UNIX_MS).min(MAX_TIMESTAMP + 1) << SEQ_BITS;
        let limit = (MAX_TIMESTAMP + 1) << SEQ_BITS;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            // `last == 0` only before the first ID; (0, 0) itself is never issued.
            let first = now.max(cur + 1);
            let end = first.checked_add(n - 1).filter(|&e| e < limit).ok_or(IdError::Exhausted)?;
            match self.last.compare_exchange_weak(cur, end, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(first),
                Err(actual) => cur = actual,
            }
        }
    }

    #[inline]
    fn make(&self, v: u64) -> RxId {
        RxId::pack(v >> SEQ_BITS, self.node, v as u16)
    }

    /// A new ID, given the current Unix time in milliseconds (the injectable clock).
    pub fn next_at(&self, unix_ms: u64) -> Result<RxId, IdError> {
        loop {
            let id = self.make(self.reserve(1, unix_ms)?);
            if id.is_issuable() {
                return Ok(id);
            }
        }
    }

    pub fn next_id(&self) -> Result<RxId, IdError> {
        self.next_at(unix_now_ms())
    }

    /// `n` new IDs in increasing order, reserved a chunk at a time (one atomic operation per
    /// chunk, sized for the 5-in-37 skipped values); `f` receives each in order.
    pub fn batch_at(&self, n: usize, unix_ms: u64, mut f: impl FnMut(RxId)) -> Result<(), IdError> {
        let mut left = n as u64;
        while left > 0 {
            let chunk = left + left / 6 + 4;
            let first = self.reserve(chunk, unix_ms)?;
            for v in first..first + chunk {
                let id = self.make(v);
                if id.is_issuable() {
                    f(id);
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn batch(&self, n: usize, f: impl FnMut(RxId)) -> Result<(), IdError> {
        self.batch_at(n, unix_now_ms(), f)
    }

    /// [`batch_at`](Self::batch_at), giving each ID's canonical text: the same IDs, made
    /// faster by encoding the top 40 bits (which change every 4 ms) once per run of IDs.
    pub fn batch_text_at(
        &self,
        n: usize,
        unix_ms: u64,
        mut f: impl FnMut(&[u8; TEXT_LEN]),
    ) -> Result<(), IdError> {
        let low_node = u64::from(self.node) << SEQ_BITS;
        let mut cached: Option<(u64, u32)> = None;
        let mut text = [b'-'; TEXT_LEN];
        let mut left = n as u64;
        while left > 0 {
            let chunk = left + left / 6 + 4;
            let first = self.reserve(chunk, unix_ms)?;
            for v in first..first + chunk {
                // v = timestamp << 16 | seq; the ID is timestamp << 38 | node << 16 | seq.
                let ts = v >> SEQ_BITS;
                let hi = ts >> 2;
                let lo = ((ts & 3) << 38) | low_node | (v & 0xFFFF);
                let sa = match cached {
                    Some((h, sa)) if h == hi => sa,
                    _ => {
                        let (a, sa) = encode_half(hi, 0);
                        cached = Some((hi, sa));
                        text[..4].copy_from_slice(&a[..4]);
                        text[5..9].copy_from_slice(&a[4..]);
                        sa
                    }
                };
                let (b, sb) = encode_half(lo, 8);
                let check = check_value((sa + sb) % 37);
                if !CROCKFORD_CHECK[check] {
                    continue;
                }
                text[10..14].copy_from_slice(&b[..4]);
                text[15..19].copy_from_slice(&b[4..]);
                text[20] = ISO7064_37[check];
                f(&text);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    pub fn batch_text(&self, n: usize, f: impl FnMut(&[u8; TEXT_LEN])) -> Result<(), IdError> {
        self.batch_text_at(n, unix_now_ms(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    const T0: u64 = EPOCH_UNIX_MS + 200_000_000_000; // some day in 2026

    /// ISO 7064 MOD 37-2 as the standard states it, independent of the code above.
    fn mod37_2_valid(s: &str) -> bool {
        let mut p = 0u32;
        for c in s.chars() {
            let v = ISO7064_37.iter().position(|&a| a as char == c).unwrap() as u32;
            p = (2 * p + v) % 37;
        }
        p == 1
    }

    fn some_id(node: u32) -> RxId {
        IdGenerator::new(node.into()).unwrap().next_at(T0).unwrap()
    }

    #[test]
    fn layout_round_trips() {
        let id = RxId::from_parts(MAX_TIMESTAMP, MAX_NODE, MAX_SEQ).unwrap();
        assert_eq!(id.as_bytes(), &[0xFF; 10]);
        assert_eq!(id.compact()[..16], *"ZZZZZZZZZZZZZZZZ");
        let id = RxId::from_parts(123_456_789, 4242, 7).unwrap();
        assert_eq!((id.timestamp_ms(), id.node(), id.sequence()), (123_456_789, 4242, 7));
        assert!(mod37_2_valid(&id.compact()));
        let id = some_id(4242);
        assert_eq!(RxId::parse(&id.text()), Ok(id));
        assert_eq!(
            RxId::from_parts(0, MAX_NODE + 1, 0),
            Err(IdError::Node(u64::from(MAX_NODE) + 1))
        );
        assert_eq!(RxId::from_parts(MAX_TIMESTAMP + 1, 0, 0), Err(IdError::Exhausted));
    }

    #[test]
    fn text_is_grouped_and_input_is_forgiving() {
        let id = some_id(99);
        let t = id.text();
        assert_eq!(t.len(), TEXT_LEN);
        assert_eq!(t.matches('-').count(), 4);
        assert_eq!(t.replace('-', ""), id.compact());
        let sloppy = t.to_lowercase().replace('-', " ");
        assert_eq!(RxId::parse(&sloppy), Ok(id));
        // O/I/L normalise to 0/1 everywhere, the check position included.
        let c = id.compact().replace('0', "o").replace('1', "L");
        assert_eq!(RxId::parse(&c), Ok(id));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(RxId::parse(""), Err(IdError::Empty));
        assert_eq!(RxId::parse(" - "), Err(IdError::Empty));
        assert_eq!(RxId::parse("ABC"), Err(IdError::Length(3)));
        assert_eq!(RxId::parse(&"A".repeat(1000)), Err(IdError::Length(1000)));
        assert_eq!(
            RxId::parse("0000U00000000000K"),
            Err(IdError::Character { ch: 'U', position: 5 })
        );
        assert_eq!(
            RxId::parse("00é0000000000000K"),
            Err(IdError::Character { ch: 'é', position: 3 })
        );
        assert_eq!(
            RxId::parse("000\u{0}000000000000K"),
            Err(IdError::Character { ch: '\u{0}', position: 4 })
        );
        assert_eq!(
            RxId::parse("0000000000000000*"),
            Err(IdError::Character { ch: '*', position: 17 })
        );
        assert_eq!(RxId::default().compact(), "00000000000000001");
        assert_eq!(RxId::parse("0000-0000-0000-0000-2"), Err(IdError::Check { found: '2' }));
        assert_eq!(
            IdError::Character { ch: 'U', position: 5 }.to_string(),
            "invalid character 'U' at position 5"
        );
    }

    #[test]
    fn excluded_check_characters_are_never_issued_nor_parsed() {
        let g = IdGenerator::new(7).unwrap();
        let mut ids = Vec::new();
        g.batch_at(20_000, T0, |id| ids.push(id)).unwrap();
        assert_eq!(ids.len(), 20_000);
        assert!(ids.iter().all(|id| CROCKFORD.contains(&id.compact_bytes()[16])));
        // The raw values the generator skipped are valid MOD 37-2 but refused.
        let (first, last) = (ids[0].value(), ids[ids.len() - 1].value());
        let skipped: Vec<RxId> = (first..=last)
            .map(|v| RxId::from_bytes(v.to_be_bytes()[6..].try_into().unwrap()))
            .filter(|id| !id.is_issuable())
            .collect();
        assert!(skipped.len() > 2_000, "about 5 in 37 are skipped: {}", skipped.len());
        for id in &skipped {
            assert!(mod37_2_valid(&id.compact()));
            let check = id.compact_bytes()[16] as char;
            let expect = if check == '*' || check == 'U' {
                Err(IdError::Character { ch: check, position: 17 })
            } else {
                Err(IdError::Unissued)
            };
            assert_eq!(RxId::parse(&id.compact()), expect);
        }
    }

    #[test]
    fn generator_is_strictly_increasing_when_the_clock_steps_back() {
        let g = IdGenerator::new(12).unwrap();
        let clock = [T0, T0, T0 + 5, T0 - 1000, T0 - 1000, T0 + 2, T0 + 6, 0, T0 + 10];
        let ids: Vec<RxId> = clock.iter().map(|&t| g.next_at(t).unwrap()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{:?} then {:?}", w[0], w[1]);
            assert!(w[0].compact() < w[1].compact());
            assert!(
                (w[0].timestamp_ms(), w[0].sequence()) < (w[1].timestamp_ms(), w[1].sequence())
            );
        }
        let ms = |t: u64| t - EPOCH_UNIX_MS;
        assert_eq!(ids[2].timestamp_ms(), ms(T0 + 5));
        // The clock went back: the generator keeps counting within T0 + 5.
        assert_eq!(ids[3].timestamp_ms(), ms(T0 + 5));
        assert_eq!(ids[5].timestamp_ms(), ms(T0 + 5));
        assert_eq!(ids[6].timestamp_ms(), ms(T0 + 6));
        assert_eq!(ids[8].timestamp_ms(), ms(T0 + 10));
        assert!(ids[8].sequence() < 40);
    }

    #[test]
    fn sequence_overflow_borrows_the_next_millisecond() {
        let g = IdGenerator::new(1).unwrap();
        let mut all = Vec::new();
        g.batch_at(70_000, T0, |id| all.push(id)).unwrap();
        assert_eq!(all.len(), 70_000);
        let t = all[0].timestamp_ms();
        assert_eq!(all[69_999].timestamp_ms(), t + 1, "borrowed exactly one millisecond");
        let wrap = all.iter().position(|id| id.timestamp_ms() == t + 1).unwrap();
        assert!(all[wrap - 1].sequence() > 65_000 && all[wrap].sequence() < 40);
        let next = g.next_at(T0).unwrap();
        assert!(next > all[69_999]);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn batch_text_is_the_text_of_batch() {
        for node in [0, 1, 0x2A_5A5A, MAX_NODE] {
            let (a, b) =
                (IdGenerator::new(node.into()).unwrap(), IdGenerator::new(node.into()).unwrap());
            let mut ids = Vec::new();
            a.batch_at(300_000, T0 + 3, |id| ids.push(id.text_bytes())).unwrap();
            let mut texts = Vec::new();
            b.batch_text_at(300_000, T0 + 3, |t| texts.push(*t)).unwrap();
            assert_eq!(ids, texts);
            assert_eq!(a.next_at(T0), b.next_at(T0));
        }
    }

    #[test]
    fn generator_refuses_bad_nodes_and_exhaustion() {
        assert_eq!(IdGenerator::new(1 << 22).unwrap_err(), IdError::Node(1 << 22));
        let g = IdGenerator::new(0).unwrap();
        let end = EPOCH_UNIX_MS + MAX_TIMESTAMP;
        assert_eq!(g.batch_at(70_000, end, |_| ()), Err(IdError::Exhausted));
        let mut n = 0;
        while g.next_at(end).is_ok() {
            n += 1;
        }
        assert!(n > 50_000 && n < 65_536, "{n} IDs in the last millisecond");
        assert_eq!(g.next_at(u64::MAX), Err(IdError::Exhausted));
    }

    #[test]
    fn threads_sharing_a_generator_never_collide() {
        let g = Arc::new(IdGenerator::new(3).unwrap());
        let per = 250_000;
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    let mut v = Vec::with_capacity(per + 100_000);
                    for i in 0..per {
                        if i % 1000 == t {
                            g.batch(100, |id| v.push(id)).unwrap();
                        } else {
                            v.push(g.next_id().unwrap());
                        }
                    }
                    // Each thread sees its own IDs strictly increasing.
                    assert!(v.windows(2).all(|w| w[0] < w[1]));
                    v
                })
            })
            .collect();
        let mut set = HashSet::new();
        let mut total = 0;
        for h in handles {
            for id in h.join().unwrap() {
                total += 1;
                assert!(set.insert(id), "duplicate {id:?}");
            }
        }
        assert_eq!(set.len(), total);
    }

    proptest! {
        #[test]
        fn any_issuable_id_round_trips(ts in 0..=MAX_TIMESTAMP, node in 0..=MAX_NODE, seq: u16) {
            let id = RxId::from_parts(ts, node, seq).unwrap();
            prop_assume!(id.is_issuable());
            prop_assert_eq!(RxId::parse(&id.text()), Ok(id));
            prop_assert_eq!(RxId::parse(&id.compact()), Ok(id));
            // The fast path takes both printed layouts; the full parser agrees.
            prop_assert_eq!(RxId::parse_fast(&id.text_bytes()), Some(id));
            prop_assert_eq!(RxId::parse_fast(&id.compact_bytes()), Some(id));
            prop_assert!(mod37_2_valid(&id.compact()));
            prop_assert_eq!(RxId::from_bytes(*id.as_bytes()), id);
        }

        #[test]
        fn every_single_error_is_caught(ts in 0..=MAX_TIMESTAMP, node in 0..=MAX_NODE, seq: u16) {
            let id = RxId::from_parts(ts, node, seq).unwrap();
            prop_assume!(id.is_issuable());
            let c = id.compact_bytes();
            for i in 0..COMPACT_LEN {
                for &a in CROCKFORD.iter().chain(b"U*") {
                    if a != c[i] {
                        let mut m = c;
                        m[i] = a;
                        prop_assert!(RxId::parse(std::str::from_utf8(&m).unwrap()).is_err());
                    }
                }
                for gap in [1, 2] {
                    if i + gap < COMPACT_LEN && c[i] != c[i + gap] {
                        let mut m = c;
                        m.swap(i, i + gap);
                        prop_assert!(RxId::parse(std::str::from_utf8(&m).unwrap()).is_err());
                    }
                }
            }
        }
    }
}
