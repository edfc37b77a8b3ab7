//! Records of the store: the JSON inputs and their validation, the compact binary form of
//! a prescription kept in memory, the events written to the journal, and the time helpers.
//!
//! # Why a hand-written binary form
//!
//! A prescription's content never changes after creation, so the index keeps it as one
//! `Box<[u8]>` (a pointer and a length: 16 bytes in the table slot) in the layout below, and
//! the journal and the snapshot reuse the very same bytes: no serde model is kept in memory,
//! no second encoding has to stay in sync, and a record costs its bytes plus a few words.
//! Every field is length-checked when decoded; the bytes are also covered by a CRC in the
//! journal, so a decoding failure is corruption, never a panic.
//!
//! ```text
//! content (one Box<[u8]> per prescription)
//!  0       flags u8: PENDING 1 | BUSY 2 (memory only), CANCELLED 4, CONSENT 8
//!  1..11   ID (10 bytes, big-endian)           11..19 created_at ms (u64 LE)
//!  19..27  valid_until ms (u64 LE)             27..59 SHA-256 digest of the access code
//!  59..70  prescriber RPPS (11 ASCII digits)   70..85 patient NIR (15 ASCII)
//!  85..95  birth date YYYY-MM-DD               95..   name: varint length + UTF-8
//!  then    line count u8, and per line: label (varint length + UTF-8), cip13 (u8 0/1 +
//!          13 ASCII digits), dosage (varint length + UTF-8), quantity varint,
//!          renewals u8, substitutable u8
//!  then    optionally, the QR token text: varint length + printable ASCII (absent: none)
//! ```
//! The QR token text (`qr_token` in the creation record) is kept so that the very same QR
//! can be printed again (a prescriber reprinting, a patient who lost the paper): it carries
//! the access code, so a store that keeps it is as sensitive as the printed papers. Checks
//! of a typed access code still compare digests (offset 27).
//! Identifiers are checked here for length and character set only; their check keys
//! (NIR key, Luhn for RPPS and FINESS, EAN-13 for CIP13) are the service's job
//! (`ordonum.checks`), so the store does not depend on that module.

use serde::Deserialize;

use crate::access::{AccessCode, AccessDigest};
use crate::id::RxId;

use super::StoreError;

pub const PENDING: u8 = 1;
pub const BUSY: u8 = 2;
pub const CANCELLED: u8 = 4;
pub const CONSENT: u8 = 8;
/// Flags that are part of the durable state (the others only exist in memory).
pub const PERSISTENT_FLAGS: u8 = CANCELLED | CONSENT;

pub const OFF_ID: usize = 1;
pub const OFF_CREATED: usize = 11;
pub const OFF_VALID: usize = 19;
pub const OFF_DIGEST: usize = 27;
pub const OFF_RPPS: usize = 59;
pub const OFF_NIR: usize = 70;
pub const OFF_BIRTH: usize = 85;
pub const OFF_NAME: usize = 95;

pub const MAX_LINES: usize = 32;
pub const MAX_QUANTITY: u32 = 9_999;
pub const MAX_RENEWALS: u32 = 11;
pub const MAX_TEXT: usize = 200;
pub const MAX_DOSAGE: usize = 500;
pub const MAX_KEY: usize = 128;
pub const MAX_QR_TOKEN: usize = 512;
/// Largest time accepted anywhere: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;
const MONTH_MS_DEFAULT: u32 = 3;
const MONTHS_RENEWABLE: u32 = 12;

// ------------------------------------------------------------------------------------------
// Byte codec

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

/// A bounds-checked reader over encoded bytes.
pub struct Dec<'a> {
    b: &'a [u8],
    pub pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Dec { b, pos: 0 }
    }
    pub fn at(b: &'a [u8], pos: usize) -> Self {
        Dec { b, pos }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let v = *self.b.get(self.pos).ok_or(CodecError("truncated"))?;
        self.pos += 1;
        Ok(v)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError("length overflow"))?;
        let s = self.b.get(self.pos..end).ok_or(CodecError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u64le(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }
    pub fn u32v(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| CodecError("integer out of range"))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError("length overflow"))?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError("invalid UTF-8"))
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(CodecError("bad option tag")),
        }
    }
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError("bad bool")),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Content view

/// One prescription line, decoded from the content bytes (borrowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineView<'a> {
    pub label: &'a str,
    pub cip13: Option<&'a [u8; 13]>,
    pub dosage: &'a str,
    pub quantity: u32,
    pub renewals: u8,
    pub substitutable: bool,
}

impl LineView<'_> {
    /// Units that may be dispensed in total: quantity × (1 + renewals).
    pub fn allowance(&self) -> u32 {
        self.quantity.saturating_mul(1 + u32::from(self.renewals))
    }
}

/// Fixed-offset accessors over content bytes. Content is validated (`Content::check`)
/// before it enters the index, so the fallbacks below are never taken in practice; they
/// exist so that no byte sequence can make a read panic.
#[derive(Clone, Copy)]
pub struct Content<'a>(pub &'a [u8]);

impl<'a> Content<'a> {
    fn fixed<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.0.get(off..off + N) {
            a.copy_from_slice(s);
        }
        a
    }
    fn ascii(&self, off: usize, n: usize) -> &'a str {
        self.0.get(off..off + n).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("")
    }
    pub fn flags(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }
    pub fn id(&self) -> RxId {
        RxId::from_bytes(self.fixed(OFF_ID))
    }
    pub fn id_bytes(&self) -> &'a [u8] {
        self.0.get(OFF_ID..OFF_ID + 10).unwrap_or(&[])
    }
    pub fn created_at(&self) -> u64 {
        u64::from_le_bytes(self.fixed(OFF_CREATED))
    }
    pub fn valid_until(&self) -> u64 {
        u64::from_le_bytes(self.fixed(OFF_VALID))
    }
    pub fn digest(&self) -> AccessDigest {
        self.fixed(OFF_DIGEST)
    }
    pub fn rpps(&self) -> &'a str {
        self.ascii(OFF_RPPS, 11)
    }
    pub fn nir(&self) -> &'a str {
        self.ascii(OFF_NIR, 15)
    }
    pub fn nir_bytes(&self) -> &'a [u8] {
        self.0.get(OFF_NIR..OFF_NIR + 15).unwrap_or(&[])
    }
    pub fn birth_date(&self) -> &'a str {
        self.ascii(OFF_BIRTH, 10)
    }
    pub fn name(&self) -> &'a str {
        Dec::at(self.0, OFF_NAME).str().unwrap_or("")
    }
    /// The lines, or an error if the bytes are not a well-formed content.
    pub fn lines(&self) -> Result<Vec<LineView<'a>>, CodecError> {
        self.lines_and_token().map(|(lines, _)| lines)
    }

    /// The QR token text kept with the prescription, if any (`None` too if malformed).
    pub fn qr_token(&self) -> Option<&'a str> {
        self.lines_and_token().ok().and_then(|(_, token)| token)
    }

    fn lines_and_token(&self) -> Result<(Vec<LineView<'a>>, Option<&'a str>), CodecError> {
        let mut d = Dec::at(self.0, OFF_NAME);
        d.str()?;
        let n = d.u8()? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let label = d.str()?;
            let cip13 = match d.u8()? {
                0 => None,
                1 => {
                    let s = d.take(13)?;
                    Some(<&[u8; 13]>::try_from(s).map_err(|_| CodecError("cip13"))?)
                }
                _ => return Err(CodecError("bad cip13 tag")),
            };
            let dosage = d.str()?;
            let quantity = d.u32v()?;
            let renewals = d.u8()?;
            let substitutable = d.bool()?;
            out.push(LineView { label, cip13, dosage, quantity, renewals, substitutable });
        }
        let token = if d.done() {
            None
        } else {
            let t = d.str()?;
            if !is_qr_token(t) {
                return Err(CodecError("bad QR token text"));
            }
            Some(t)
        };
        if !d.done() {
            return Err(CodecError("trailing bytes after the lines"));
        }
        Ok((out, token))
    }
    pub fn line_count(&self) -> usize {
        let mut d = Dec::at(self.0, OFF_NAME);
        if d.str().is_err() {
            return 0;
        }
        d.u8().map_or(0, usize::from)
    }
    /// Full structural check, run on everything read back from disk.
    pub fn check(&self) -> Result<(), CodecError> {
        if self.0.len() < OFF_NAME + 2 {
            return Err(CodecError("content too short"));
        }
        for (off, n) in [(OFF_RPPS, 11), (OFF_NIR, 15), (OFF_BIRTH, 10)] {
            if !self.0[off..off + n].is_ascii() {
                return Err(CodecError("identifier is not ASCII"));
            }
        }
        let lines = self.lines()?;
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(CodecError("bad line count"));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Mutable state and events

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervention {
    None = 0,
    Substitution = 1,
    Adjustment = 2,
}

impl Intervention {
    pub fn name(self) -> &'static str {
        match self {
            Intervention::None => "none",
            Intervention::Substitution => "substitution",
            Intervention::Adjustment => "adjustment",
        }
    }
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Intervention::None),
            1 => Ok(Intervention::Substitution),
            2 => Ok(Intervention::Adjustment),
            _ => Err(CodecError("bad intervention kind")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispensedLine {
    /// Line number in the prescription, from 0 (the HTTP contract's numbering).
    pub line: u8,
    pub quantity: u32,
    pub cip13: Option<[u8; 13]>,
    pub kind: Intervention,
    pub motif: Option<Box<str>>,
    pub agreed_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispensation {
    pub at: u64,
    pub key: Box<str>,
    pub finess: [u8; 9],
    pub rpps: [u8; 11],
    pub lines: Box<[DispensedLine]>,
}

impl Dispensation {
    /// Same request (everything but the time): a repeated idempotency key must carry it.
    pub fn same_request(&self, other: &Dispensation) -> bool {
        self.finess == other.finess && self.rpps == other.rpps && self.lines == other.lines
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.at);
        put_bytes(out, self.key.as_bytes());
        out.extend_from_slice(&self.finess);
        out.extend_from_slice(&self.rpps);
        out.push(self.lines.len() as u8);
        for l in self.lines.iter() {
            out.push(l.line);
            put_varint(out, u64::from(l.quantity));
            match &l.cip13 {
                None => out.push(0),
                Some(c) => {
                    out.push(1);
                    out.extend_from_slice(c);
                }
            }
            out.push(l.kind as u8);
            put_opt_bytes(out, l.motif.as_deref().map(str::as_bytes));
            match l.agreed_at {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    put_varint(out, t);
                }
            }
        }
    }
    pub fn decode(d: &mut Dec<'_>) -> Result<Dispensation, CodecError> {
        let at = d.varint()?;
        let key = d.str()?.into();
        let finess = d.array()?;
        let rpps = d.array()?;
        let n = d.u8()?;
        let mut lines = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let line = d.u8()?;
            let quantity = d.u32v()?;
            let cip13 = if d.bool()? { Some(d.array()?) } else { None };
            let kind = Intervention::from_u8(d.u8()?)?;
            let motif = d.opt_str()?.map(Into::into);
            let agreed_at = if d.bool()? { Some(d.varint()?) } else { None };
            lines.push(DispensedLine { line, quantity, cip13, kind, motif, agreed_at });
        }
        Ok(Dispensation { at, key, finess, rpps, lines: lines.into() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub at: u64,
    pub actor: Box<str>,
}

/// What changes after creation. Allocated on the first dispensation or scan only, so an
/// untouched prescription costs one null pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// LSN of the last dispensation applied: replay skips dispensations at or below it,
    /// which makes a fuzzy snapshot plus the journal after it exact.
    pub last_lsn: u64,
    /// The same for scans (`access`). Apart from `last_lsn` because a scan is applied by
    /// its caller at once, possibly before a dispensation with a lower LSN that is still
    /// waiting for its fdatasync (see `Journal::append`).
    pub access_lsn: u64,
    pub delivered: Box<[u32]>,
    pub dispensations: Vec<Dispensation>,
    pub access: Vec<Access>,
}

impl Dynamic {
    pub fn new(lines: usize) -> Dynamic {
        Dynamic { delivered: vec![0; lines].into(), ..Dynamic::default() }
    }
    pub fn add(&mut self, d: Dispensation) {
        for l in d.lines.iter() {
            if let Some(slot) = self.delivered.get_mut(usize::from(l.line)) {
                *slot = slot.saturating_add(l.quantity);
            }
        }
        self.dispensations.push(d);
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.last_lsn);
        put_varint(out, self.dispensations.len() as u64);
        for d in &self.dispensations {
            d.encode(out);
        }
        put_varint(out, self.access_lsn);
        put_varint(out, self.access.len() as u64);
        for a in &self.access {
            put_varint(out, a.at);
            put_bytes(out, a.actor.as_bytes());
        }
    }
    pub fn decode(d: &mut Dec<'_>, lines: usize) -> Result<Dynamic, CodecError> {
        let mut dy = Dynamic::new(lines);
        dy.last_lsn = d.varint()?;
        let n = d.varint()?;
        for _ in 0..n {
            dy.add(Dispensation::decode(d)?);
        }
        dy.access_lsn = d.varint()?;
        let n = d.varint()?;
        for _ in 0..n {
            let at = d.varint()?;
            dy.access.push(Access { at, actor: d.str()?.into() });
        }
        Ok(dy)
    }
}

/// A journal event. Its encoding is the journal record's payload: `kind u8, lsn varint,
/// body` (see `journal.rs` for the framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Content bytes with the persistent flags only.
    Create {
        content: Box<[u8]>,
    },
    Dispense {
        id: RxId,
        d: Dispensation,
    },
    Cancel {
        id: RxId,
        at: u64,
    },
    Consent {
        id: RxId,
        allowed: bool,
        at: u64,
    },
    Scan {
        id: RxId,
        access: Access,
    },
}

impl Event {
    pub fn id(&self) -> RxId {
        match self {
            Event::Create { content } => Content(content).id(),
            Event::Dispense { id, .. }
            | Event::Cancel { id, .. }
            | Event::Consent { id, .. }
            | Event::Scan { id, .. } => *id,
        }
    }
    pub fn encode(&self, lsn: u64, out: &mut Vec<u8>) {
        let kind = match self {
            Event::Create { .. } => 1,
            Event::Dispense { .. } => 2,
            Event::Cancel { .. } => 3,
            Event::Consent { .. } => 4,
            Event::Scan { .. } => 5,
        };
        out.push(kind);
        put_varint(out, lsn);
        match self {
            Event::Create { content } => out.extend_from_slice(content),
            Event::Dispense { id, d } => {
                out.extend_from_slice(id.as_bytes());
                d.encode(out);
            }
            Event::Cancel { id, at } => {
                out.extend_from_slice(id.as_bytes());
                put_varint(out, *at);
            }
            Event::Consent { id, allowed, at } => {
                out.extend_from_slice(id.as_bytes());
                out.push(u8::from(*allowed));
                put_varint(out, *at);
            }
            Event::Scan { id, access } => {
                out.extend_from_slice(id.as_bytes());
                put_varint(out, access.at);
                put_bytes(out, access.actor.as_bytes());
            }
        }
    }
    /// Decodes a payload into `(lsn, event)`.
    pub fn decode(payload: &[u8]) -> Result<(u64, Event), CodecError> {
        let mut d = Dec::new(payload);
        let kind = d.u8()?;
        let lsn = d.varint()?;
        let ev = match kind {
            1 => {
                let content: Box<[u8]> = d.take(payload.len() - d.pos)?.into();
                Content(&content).check()?;
                Event::Create { content }
            }
            2 => {
                let id = RxId::from_bytes(d.array()?);
                Event::Dispense { id, d: Dispensation::decode(&mut d)? }
            }
            3 => Event::Cancel { id: RxId::from_bytes(d.array()?), at: d.varint()? },
            4 => {
                let id = RxId::from_bytes(d.array()?);
                Event::Consent { id, allowed: d.bool()?, at: d.varint()? }
            }
            5 => {
                let id = RxId::from_bytes(d.array()?);
                let at = d.varint()?;
                Event::Scan { id, access: Access { at, actor: d.str()?.into() } }
            }
            _ => return Err(CodecError("unknown event kind")),
        };
        if !d.done() {
            return Err(CodecError("trailing bytes in event"));
        }
        Ok((lsn, ev))
    }
}

// ------------------------------------------------------------------------------------------
// JSON inputs

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    id: String,
    prescriber_rpps: String,
    patient: PatientIn,
    #[serde(default)]
    valid_until_ms: Option<u64>,
    lines: Vec<LineIn>,
    prescriber_may_view_dispensations: bool,
    access_code: String,
    #[serde(default)]
    qr_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientIn {
    nir: String,
    name: String,
    birth_date: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    label: String,
    #[serde(default)]
    cip13: Option<String>,
    dosage: String,
    quantity: u32,
    #[serde(default)]
    renewals: u32,
    substitutable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispensationIn {
    pharmacy_finess: String,
    pharmacist_rpps: String,
    lines: Vec<DispensedLineIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispensedLineIn {
    line: u32,
    quantity: u32,
    #[serde(default)]
    cip13: Option<String>,
    intervention: InterventionIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InterventionIn {
    kind: KindIn,
    #[serde(default)]
    motif: Option<String>,
    #[serde(default)]
    prescriber_agreed_at: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum KindIn {
    None,
    Substitution,
    Adjustment,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Invalid { field: field.into(), message: message.into() }
}

fn parse_json<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, StoreError> {
    // Fast path: plain serde_json. Only a record that fails is parsed again with the path
    // tracker, which costs on every field but names the one at fault.
    if let Ok(v) = serde_json::from_slice(json) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" { "record".to_owned() } else { path };
        invalid(field, e.into_inner().to_string())
    })?;
    // Trailing characters after the value.
    de.end().map_err(|e| invalid("record", e.to_string()))?;
    Ok(value)
}

pub fn digits<const N: usize>(field: &str, s: &str) -> Result<[u8; N], StoreError> {
    let b = s.as_bytes();
    if b.len() != N || !b.iter().all(u8::is_ascii_digit) {
        return Err(invalid(field, format!("expected {N} digits, got {s:?}")));
    }
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    Ok(a)
}

/// NIR: 15 characters, digits except the department (characters 6-7) which may be 2A/2B.
pub fn nir(field: &str, s: &str) -> Result<[u8; 15], StoreError> {
    let up = s.to_ascii_uppercase();
    let b = up.as_bytes();
    let ok = b.len() == 15
        && b.iter().enumerate().all(|(i, c)| {
            c.is_ascii_digit() || (i == 6 && (*c == b'A' || *c == b'B') && b[5] == b'2')
        });
    if !ok {
        return Err(invalid(
            field,
            format!("expected a NIR of 15 characters (digits, 2A/2B for Corsica), got {s:?}"),
        ));
    }
    let mut a = [0u8; 15];
    a.copy_from_slice(b);
    Ok(a)
}

pub fn text(
    field: &str,
    s: &str,
    min: usize,
    max: usize,
    newlines: bool,
) -> Result<(), StoreError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(invalid(field, format!("length must be {min} to {max} characters, got {n}")));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() && !(newlines && *c == '\n')) {
        return Err(invalid(field, format!("control character {c:?} not allowed")));
    }
    Ok(())
}

pub fn idempotency_key(s: &str) -> Result<(), StoreError> {
    if s.is_empty() || s.len() > MAX_KEY || !s.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "idempotency_key",
            format!("expected 1 to {MAX_KEY} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

pub fn check_time(field: &str, ms: u64) -> Result<u64, StoreError> {
    if ms > MAX_TIME_MS {
        return Err(invalid(field, format!("time {ms} ms is past year 9999")));
    }
    Ok(ms)
}

/// Parses and validates a creation record; returns the content bytes (flags: CONSENT only).
pub fn build_content(json: &[u8], now: u64) -> Result<Box<[u8]>, StoreError> {
    let r: RecordIn = parse_json(json)?;
    let id = RxId::parse(&r.id).map_err(|e| invalid("id", e.to_string()))?;
    let rpps = digits::<11>("prescriber_rpps", &r.prescriber_rpps)?;
    let nir = nir("patient.nir", &r.patient.nir)?;
    text("patient.name", &r.patient.name, 1, MAX_TEXT, false)?;
    let birth = parse_date(&r.patient.birth_date)
        .ok_or_else(|| invalid("patient.birth_date", "expected a date YYYY-MM-DD"))?;
    if r.lines.is_empty() || r.lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("1 to {MAX_LINES} lines, got {}", r.lines.len())));
    }
    let code =
        AccessCode::parse(&r.access_code).map_err(|e| invalid("access_code", e.to_string()))?;

    let mut out = Vec::with_capacity(128 + r.lines.len() * 48 + r.patient.name.len());
    out.push(if r.prescriber_may_view_dispensations { CONSENT } else { 0 });
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&now.to_le_bytes());
    let renewable = r.lines.iter().any(|l| l.renewals > 0);
    let max_valid = add_months(now, if renewable { MONTHS_RENEWABLE } else { MONTH_MS_DEFAULT });
    let valid_until = match r.valid_until_ms {
        None => add_months(now, MONTH_MS_DEFAULT),
        Some(v) if v <= now => {
            return Err(invalid("valid_until_ms", "must be later than the creation time"));
        }
        Some(v) if v > max_valid => {
            return Err(invalid(
                "valid_until_ms",
                format!(
                    "at most {} months after creation ({}), got {}",
                    if renewable { MONTHS_RENEWABLE } else { MONTH_MS_DEFAULT },
                    rfc3339(max_valid),
                    rfc3339(v.min(MAX_TIME_MS))
                ),
            ));
        }
        Some(v) => v,
    };
    out.extend_from_slice(&valid_until.to_le_bytes());
    out.extend_from_slice(&code.digest());
    out.extend_from_slice(&rpps);
    out.extend_from_slice(&nir);
    out.extend_from_slice(birth.as_bytes());
    put_bytes(&mut out, r.patient.name.as_bytes());
    out.push(r.lines.len() as u8);
    for (i, l) in r.lines.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        text(&f("label"), &l.label, 1, MAX_TEXT, false)?;
        text(&f("dosage"), &l.dosage, 0, MAX_DOSAGE, true)?;
        if l.quantity == 0 || l.quantity > MAX_QUANTITY {
            return Err(invalid(
                f("quantity"),
                format!("1 to {MAX_QUANTITY} units, got {}", l.quantity),
            ));
        }
        if l.renewals > MAX_RENEWALS {
            return Err(invalid(f("renewals"), format!("0 to {MAX_RENEWALS}, got {}", l.renewals)));
        }
        put_bytes(&mut out, l.label.as_bytes());
        match &l.cip13 {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.extend_from_slice(&digits::<13>(&f("cip13"), c)?);
            }
        }
        put_bytes(&mut out, l.dosage.as_bytes());
        put_varint(&mut out, u64::from(l.quantity));
        out.push(l.renewals as u8);
        out.push(u8::from(l.substitutable));
    }
    if let Some(token) = &r.qr_token {
        qr_token(token)?;
        put_bytes(&mut out, token.as_bytes());
    }
    Ok(out.into_boxed_slice())
}

/// 1 to [`MAX_QR_TOKEN`] printable ASCII characters (what a QR token text is made of).
fn is_qr_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_QR_TOKEN && s.bytes().all(|c| (b' '..=b'~').contains(&c))
}

fn qr_token(s: &str) -> Result<(), StoreError> {
    if !is_qr_token(s) {
        return Err(invalid(
            "qr_token",
            format!("expected 1 to {MAX_QR_TOKEN} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// A parsed dispensation request, validated on its own (not yet against a prescription).
pub fn parse_dispensation(json: &[u8], key: &str, now: u64) -> Result<Dispensation, StoreError> {
    let r: DispensationIn = parse_json(json)?;
    let finess = digits::<9>("pharmacy_finess", &r.pharmacy_finess)?;
    let rpps = digits::<11>("pharmacist_rpps", &r.pharmacist_rpps)?;
    if r.lines.is_empty() || r.lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("1 to {MAX_LINES} lines, got {}", r.lines.len())));
    }
    let mut lines: Vec<DispensedLine> = Vec::with_capacity(r.lines.len());
    for (i, l) in r.lines.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        if l.line as usize >= MAX_LINES {
            return Err(invalid(
                f("line"),
                format!("line numbers run from 0 to {}, got {}", MAX_LINES - 1, l.line),
            ));
        }
        if lines.iter().any(|o| u32::from(o.line) == l.line) {
            return Err(invalid(f("line"), format!("line {} appears twice", l.line)));
        }
        if l.quantity == 0 || l.quantity > MAX_QUANTITY {
            return Err(invalid(
                f("quantity"),
                format!("1 to {MAX_QUANTITY} units, got {}", l.quantity),
            ));
        }
        let cip13 = l.cip13.as_deref().map(|c| digits::<13>(&f("cip13"), c)).transpose()?;
        let iv = &l.intervention;
        let kind = match iv.kind {
            KindIn::None => Intervention::None,
            KindIn::Substitution => Intervention::Substitution,
            KindIn::Adjustment => Intervention::Adjustment,
        };
        match (kind, &iv.motif) {
            (Intervention::Adjustment, None) => {
                return Err(invalid(f("intervention.motif"), "an adjustment needs a motif code"));
            }
            (Intervention::Adjustment, Some(m)) => {
                if m.is_empty()
                    || m.len() > 16
                    || !m.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    return Err(invalid(
                        f("intervention.motif"),
                        "a motif code is 1 to 16 letters, digits, '-' or '_'",
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(invalid(f("intervention.motif"), "only an adjustment has a motif"));
            }
            (_, None) => {}
        }
        if kind == Intervention::Substitution && cip13.is_none() {
            return Err(invalid(f("cip13"), "a substitution names the delivered product (cip13)"));
        }
        let agreed_at = match &iv.prescriber_agreed_at {
            None => None,
            Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                invalid(f("intervention.prescriber_agreed_at"), "expected an RFC 3339 time")
            })?),
        };
        lines.push(DispensedLine {
            line: l.line as u8,
            quantity: l.quantity,
            cip13,
            kind,
            motif: iv.motif.as_deref().map(Into::into),
            agreed_at,
        });
    }
    Ok(Dispensation { at: now, key: key.into(), finess, rpps, lines: lines.into() })
}

// ------------------------------------------------------------------------------------------
// Time

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Adds calendar months (UTC), clamping the day to the end of the month.
pub fn add_months(ms: u64, months: u32) -> u64 {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    let (y, m, d) = civil(days);
    let total = y * 12 + i64::from(m - 1) + i64::from(months);
    let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    (days_from_civil(ny, nm, nd) as u64) * 86_400_000 + rem
}

/// `YYYY-MM-DD`, validated (returns the canonical text).
pub fn parse_date(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = b.get(r)?;
        t.iter()
            .all(u8::is_ascii_digit)
            .then(|| t.iter().fold(0, |a, c| a * 10 + u32::from(c - b'0')))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1800..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || d == 0
        || d > days_in_month(i64::from(y), m)
    {
        return None;
    }
    Some(s.to_owned())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix ms.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    parse_date(s.get(0..10)?)?;
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = b.get(r)?;
        t.iter()
            .all(u8::is_ascii_digit)
            .then(|| t.iter().fold(0, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms = ms * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let dig = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let (oh, om) = (dig(h1)? * 10 + dig(h2)?, dig(m1)? * 10 + dig(m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 60 + om;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_min * 60;
    let total = secs.checked_mul(1000)? + ms;
    u64::try_from(total).ok().filter(|t| *t <= MAX_TIME_MS)
}

/// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 bytes).
pub fn write_rfc3339(out: &mut Vec<u8>, ms: u64) {
    let ms = ms.min(MAX_TIME_MS);
    let (y, m, d) = civil((ms / 86_400_000) as i64);
    let r = ms % 86_400_000;
    let (h, mi, s, f) = (r / 3_600_000, r / 60_000 % 60, r / 1000 % 60, r % 1000);
    let y = y as u32;
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let mut b = [0u8; 24];
    b[0..4].copy_from_slice(&[
        b'0' + (y / 1000 % 10) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    b[4] = b'-';
    b[5..7].copy_from_slice(&two(u64::from(m)));
    b[7] = b'-';
    b[8..10].copy_from_slice(&two(u64::from(d)));
    b[10] = b'T';
    b[11..13].copy_from_slice(&two(h));
    b[13] = b':';
    b[14..16].copy_from_slice(&two(mi));
    b[16] = b':';
    b[17..19].copy_from_slice(&two(s));
    b[19] = b'.';
    b[20..23].copy_from_slice(&[
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
    b[23] = b'Z';
    out.extend_from_slice(&b);
}

pub fn rfc3339(ms: u64) -> String {
    let mut v = Vec::with_capacity(24);
    write_rfc3339(&mut v, ms);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn time_round_trips_and_months_clamp() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_735_689_600_123), "2025-01-01T00:00:00.123Z");
        assert_eq!(parse_rfc3339("2025-01-01T01:00:00.123+01:00"), Some(1_735_689_600_123));
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(1_735_689_600_000));
        assert_eq!(parse_rfc3339("2025-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00"), None);
        let jan31 = parse_rfc3339("2025-01-31T10:00:00Z").unwrap();
        assert_eq!(rfc3339(add_months(jan31, 1)), "2025-02-28T10:00:00.000Z");
        assert_eq!(rfc3339(add_months(jan31, 13)), "2026-02-28T10:00:00.000Z");
        assert_eq!(rfc3339(add_months(jan31, 3)), "2025-04-30T10:00:00.000Z");
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ms in 0u64..=MAX_TIME_MS) {
            prop_assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }

        #[test]
        fn varints_round_trip(v: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut d = Dec::new(&out);
            prop_assert_eq!(d.varint(), Ok(v));
            prop_assert!(d.done());
        }
    }
}
