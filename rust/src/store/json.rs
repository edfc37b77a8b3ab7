//! The documents the store hands out, serialised straight from the binary content into
//! bytes the HTTP layer forwards as they are. Hand-written: the shapes are fixed, the strings
//! were validated on the way in, and writing into one reused `Vec` is the fast path of
//! `get` (no intermediate tree, no allocation per field).

use super::index::Slot;
use super::model::{write_rfc3339, Content, Dispensation, Dynamic, LineView, CANCELLED, CONSENT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    PartiallyDispensed,
    Dispensed,
    Cancelled,
    Expired,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PartiallyDispensed => "partially_dispensed",
            Status::Dispensed => "dispensed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }
}

/// Status from the stored facts; `expired` is derived from `now`, never stored.
/// Precedence: cancelled, then dispensed (a fully dispensed prescription stays so), then
/// expired, then partially dispensed / active.
pub fn status(
    flags: u8,
    lines: &[LineView<'_>],
    dy: Option<&Dynamic>,
    valid_until: u64,
    now: u64,
) -> Status {
    if flags & CANCELLED != 0 {
        return Status::Cancelled;
    }
    let delivered = |i: usize| dy.and_then(|d| d.delivered.get(i).copied()).unwrap_or(0);
    if lines.iter().enumerate().all(|(i, l)| delivered(i) >= l.allowance()) {
        return Status::Dispensed;
    }
    if now > valid_until {
        return Status::Expired;
    }
    if dy.is_some_and(|d| !d.dispensations.is_empty()) {
        Status::PartiallyDispensed
    } else {
        Status::Active
    }
}

pub fn slot_status(slot: &Slot, now: u64) -> Status {
    let c = slot.view();
    let lines = c.lines().unwrap_or_default();
    status(c.flags(), &lines, slot.dynamic.as_deref(), c.valid_until(), now)
}

pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Whether any byte of the 8 in `w` is below 0x20, a quote or a backslash (SWAR: exact for
/// "any"; bytes of multi-byte UTF-8 characters, >= 0x80, never match).
#[inline]
fn needs_escape(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    (below_space | zero_byte(w ^ (LO * u64::from(b'"'))) | zero_byte(w ^ (LO * u64::from(b'\\'))))
        != 0
}

/// A JSON string literal, escaping quotes, backslashes and control characters. Text is
/// checked 8 bytes at a time and copied in runs: the documents are mostly text that needs
/// no escaping, and this loop was the largest part of rendering one.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
            if !needs_escape(u64::from_le_bytes(chunk)) {
                i += 8;
                continue;
            }
        }
        let c = b.get(i).copied().unwrap_or(b' ');
        i += 1;
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        out.extend_from_slice(b.get(start..i - 1).unwrap_or_default());
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
        }
        start = i;
    }
    out.extend_from_slice(b.get(start..).unwrap_or_default());
    out.push(b'"');
}

fn push_ascii(out: &mut Vec<u8>, b: &[u8]) {
    // Identifiers are validated ASCII digits/letters: no escaping needed.
    out.push(b'"');
    out.extend_from_slice(b);
    out.push(b'"');
}

fn push_time(out: &mut Vec<u8>, ms: u64) {
    out.push(b'"');
    write_rfc3339(out, ms);
    out.push(b'"');
}

fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

pub fn push_id(out: &mut Vec<u8>, c: Content<'_>) {
    push_ascii(out, &c.id().text_bytes());
}

pub fn dispensation_id(out: &mut Vec<u8>, c: Content<'_>, n: usize) {
    out.push(b'"');
    out.extend_from_slice(&c.id().text_bytes());
    out.push(b'/');
    push_u64(out, n as u64);
    out.push(b'"');
}

fn push_dispensation(out: &mut Vec<u8>, c: Content<'_>, n: usize, d: &Dispensation) {
    out.extend_from_slice(b"{\"dispensation_id\":");
    dispensation_id(out, c, n);
    out.extend_from_slice(b",\"at\":");
    push_time(out, d.at);
    out.extend_from_slice(b",\"pharmacy_finess\":");
    push_ascii(out, &d.finess);
    out.extend_from_slice(b",\"pharmacist_rpps\":");
    push_ascii(out, &d.rpps);
    out.extend_from_slice(b",\"lines\":[");
    for (i, l) in d.lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"line\":");
        push_u64(out, u64::from(l.line));
        out.extend_from_slice(b",\"quantity\":");
        push_u64(out, u64::from(l.quantity));
        out.extend_from_slice(b",\"cip13\":");
        match &l.cip13 {
            Some(c) => push_ascii(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"intervention\":{\"kind\":\"");
        out.extend_from_slice(l.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"motif\":");
        match &l.motif {
            Some(m) => push_str(out, m),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"prescriber_agreed_at\":");
        match l.agreed_at {
            Some(t) => push_time(out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
}

fn push_dispensations(out: &mut Vec<u8>, slot: &Slot) {
    out.push(b'[');
    if let Some(dy) = slot.dynamic.as_deref() {
        for (i, d) in dy.dispensations.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_dispensation(out, slot.view(), i + 1, d);
        }
    }
    out.push(b']');
}

/// The full document of a prescription (see the contract in `mod.rs`).
pub fn document(out: &mut Vec<u8>, slot: &Slot, now: u64) {
    let c = slot.view();
    let lines = c.lines().unwrap_or_default();
    let dy = slot.dynamic.as_deref();
    let st = status(c.flags(), &lines, dy, c.valid_until(), now);
    out.extend_from_slice(b"{\"id\":");
    push_id(out, c);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(st.name().as_bytes());
    out.extend_from_slice(b"\",\"created_at\":");
    push_time(out, c.created_at());
    out.extend_from_slice(b",\"valid_until\":");
    push_time(out, c.valid_until());
    out.extend_from_slice(b",\"prescriber\":{\"rpps\":");
    push_ascii(out, c.rpps().as_bytes());
    out.extend_from_slice(b"},\"patient\":{\"nir\":");
    push_ascii(out, c.nir().as_bytes());
    out.extend_from_slice(b",\"name\":");
    push_str(out, c.name());
    out.extend_from_slice(b",\"birth_date\":");
    push_ascii(out, c.birth_date().as_bytes());
    out.extend_from_slice(b"},\"prescriber_may_view_dispensations\":");
    push_bool(out, c.flags() & CONSENT != 0);
    out.extend_from_slice(b",\"lines\":[");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"line\":");
        push_u64(out, i as u64);
        out.extend_from_slice(b",\"label\":");
        push_str(out, l.label);
        out.extend_from_slice(b",\"cip13\":");
        match l.cip13 {
            Some(c) => push_ascii(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"dosage\":");
        push_str(out, l.dosage);
        out.extend_from_slice(b",\"quantity\":");
        push_u64(out, u64::from(l.quantity));
        out.extend_from_slice(b",\"renewals\":");
        push_u64(out, u64::from(l.renewals));
        out.extend_from_slice(b",\"substitutable\":");
        push_bool(out, l.substitutable);
        out.extend_from_slice(b",\"remaining\":");
        let delivered = dy.and_then(|d| d.delivered.get(i).copied()).unwrap_or(0);
        push_u64(out, u64::from(l.allowance().saturating_sub(delivered)));
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"dispensations\":");
    push_dispensations(out, slot);
    out.push(b'}');
}

pub fn dispensations(out: &mut Vec<u8>, slot: &Slot) {
    out.extend_from_slice(b"{\"dispensations\":");
    push_dispensations(out, slot);
    out.push(b'}');
}

pub fn access_log(out: &mut Vec<u8>, slot: &Slot) {
    out.extend_from_slice(b"{\"access_log\":[");
    if let Some(dy) = slot.dynamic.as_deref() {
        for (i, a) in dy.access.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"at\":");
            push_time(out, a.at);
            out.extend_from_slice(b",\"actor\":");
            push_str(out, &a.actor);
            out.extend_from_slice(b",\"action\":\"scan\"}");
        }
    }
    out.extend_from_slice(b"]}");
}

/// The answer to a dispensation: `{"dispensation_id","status","lines":[{"line","remaining"}],
/// "replayed"}`, as of right after dispensation number `n` (1-based) given the deliveries
/// up to and including it.
pub fn dispense_answer(
    out: &mut Vec<u8>,
    c: Content<'_>,
    n: usize,
    st: Status,
    remaining: &[u32],
    replayed: bool,
) {
    out.extend_from_slice(b"{\"dispensation_id\":");
    dispensation_id(out, c, n);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(st.name().as_bytes());
    out.extend_from_slice(b"\",\"lines\":[");
    for (i, r) in remaining.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"line\":");
        push_u64(out, i as u64);
        out.extend_from_slice(b",\"remaining\":");
        push_u64(out, u64::from(*r));
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"replayed\":");
    push_bool(out, replayed);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time loop `push_str` replaced: the reference it must equal.
    fn push_str_reference(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        for ch in s.chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                c if (c as u32) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.push(b'"');
    }

    #[test]
    fn needs_escape_is_exact_on_every_byte_at_every_position() {
        for byte in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = byte;
                let want = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(needs_escape(u64::from_le_bytes(w)), want, "byte {byte:#x} at {pos}");
            }
        }
    }

    proptest! {
        #[test]
        fn push_str_equals_the_reference_and_round_trips(
            s in proptest::string::string_regex("[a-zé€\"\\\\\n\\t\u{0}-\u{1f} ]{0,40}").unwrap(),
            any in any::<String>(),
        ) {
            for text in [s.as_str(), any.as_str()] {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                push_str(&mut got, text);
                push_str_reference(&mut want, text);
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(serde_json::from_slice::<String>(&got).unwrap(), text);
            }
        }
    }
}
