//! Signed QR tokens: the code printed on every paper prescription.
//!
//! # Layout (version 1)
//!
//! A token is 99 bytes, big-endian, then written as text:
//!
//! ```text
//! offset  size  field
//!      0     1  version = 1
//!      1    10  prescription ID, binary (crate::id: 42-bit ms, 22-bit node, 16-bit seq)
//!     11    16  access code: 128 bits from the OS CSPRNG, fresh per token (crate::access)
//!     27     4  kid: the signing key's id, exactly 4 ASCII characters in [A-Z0-9] (`FR01`)
//!     31     4  issued_at: u32 seconds since the ID epoch 2020-01-01T00:00:00Z (to 2156)
//!     35    64  Ed25519 signature (RFC 8032, pure) over DOMAIN || bytes[0..35]
//! DOMAIN = b"ordonum/rx-token/v1\0" (20 bytes; a signature made for anything else,
//!          acknowledgements included, can never pass as a token)
//! text   = "RX1:" + Base45(99 bytes)  (RFC 9285): 4 + 149 = 153 characters, all in the QR
//!          alphanumeric set, so it fits a version 6 QR code at error-correction level M
//!          (capacity 154).
//! ```
//!
//! # Verification
//!
//! [`KeyRing::verify_at`] checks, in order: the prefix, the Base45 text, the length, the
//! version, the kid's form, the ID's check character (only issuable IDs are signed), that
//! the kid is active (not unknown, not revoked), the signature (`verify_strict`: no
//! small-order R, no weak key), then the age if the ring has a maximum age. Each failure
//! has its own [`TokenError`] for operators; the Python layer turns them all into one
//! opaque `InvalidToken`. Nothing secret is compared here except inside the signature
//! check (ed25519-dalek compares in constant time); [`Token`] equality is constant-time
//! since a token carries its access code.
//!
//! [`KeyRing::verify_many_at`] verifies many tokens with one Ed25519 batch equation
//! (`verify_batch`) when there are at least [`BATCH_MIN`] to check, and falls back to one
//! check per token to find the culprits when the batch fails. The batch equation is
//! cofactorless like the single check; it differs from `verify_strict` only on signatures
//! with a small-order R, which only the key's holder can make, and every key in a ring is
//! checked to be neither weak nor of mixed order when it is added.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::access::AccessCode;
use crate::base45;
use crate::id::{RxId, EPOCH_UNIX_MS};

pub const VERSION: u8 = 1;
pub const PREFIX: &str = "RX1:";
pub const DOMAIN: &[u8] = b"ordonum/rx-token/v1\0";
pub const KID_LEN: usize = 4;
/// Bytes before the signature: what is signed (after [`DOMAIN`]).
pub const SIGNED_LEN: usize = 1 + RxId::BYTES + AccessCode::BYTES + KID_LEN + 4;
pub const BYTES: usize = SIGNED_LEN + 64;
pub const TEXT_LEN: usize = PREFIX.len() + base45::encoded_len(BYTES);
/// Clock skew tolerated for a token "issued" in the future, when a maximum age is set.
pub const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// From this many signatures on, one batch equation beats one check each (measured:
/// `cargo test --release -- --ignored batch_threshold --nocapture`).
pub const BATCH_MIN: usize = 2;

/// A key id: 4 characters in `[A-Z0-9]`, e.g. `FR01`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kid([u8; KID_LEN]);

impl Kid {
    pub fn parse(text: &str) -> Result<Kid, KeyError> {
        let b = text.as_bytes();
        if b.len() != KID_LEN || !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return Err(KeyError::Kid(text.chars().take(32).collect()));
        }
        Ok(Kid([b[0], b[1], b[2], b[3]]))
    }

    fn from_bytes(b: [u8; KID_LEN]) -> Option<Kid> {
        b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()).then_some(Kid(b))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ever gets in.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({})", self.as_str())
    }
}

/// Errors about keys and key rings; the `Display` text is the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Kid(String),
    SeedLength(usize),
    PublicKeyLength(usize),
    /// Not a point, a small-order or mixed-order point: refused as a verifying key.
    PublicKey,
    Pem(String),
    Random,
    Revoked(Kid),
    /// The kid is active with a different key.
    Taken(Kid),
    MaxAge,
    /// A token cache must hold at least one text.
    CacheSize,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Kid(k) => {
                write!(f, "a kid is exactly {KID_LEN} characters in A-Z or 0-9, got {k:?}")
            }
            KeyError::SeedLength(n) => {
                write!(f, "an Ed25519 private key (seed) is 32 bytes, got {n}")
            }
            KeyError::PublicKeyLength(n) => write!(f, "an Ed25519 public key is 32 bytes, got {n}"),
            KeyError::PublicKey => f.write_str(
                "not a usable Ed25519 public key (not a curve point, or of small or mixed order)",
            ),
            KeyError::Pem(why) => write!(f, "cannot read the PEM key: {why}"),
            KeyError::Random => f.write_str("the operating system's random generator failed"),
            KeyError::Revoked(k) => write!(f, "kid {k} is revoked and cannot be used again"),
            KeyError::Taken(k) => write!(f, "kid {k} is already in the ring with another key"),
            KeyError::CacheSize => f.write_str("size must be at least 1, got 0"),
            KeyError::MaxAge => f.write_str("max_age must be a positive number of seconds"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Why a token text did not verify. For operators (`diagnose_token`); never shown to the
/// holder of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Prefix,
    Base45(base45::Base45Error),
    Length(usize),
    Version(u8),
    Kid,
    IdCheck,
    UnknownKid(Kid),
    RevokedKid(Kid),
    Signature,
    TooOld {
        age_s: i64,
        max_age_s: u64,
    },
    Future {
        ahead_s: i64,
    },
    /// Issuing only: the clock is outside 2020..2156, or the CSPRNG failed.
    Clock,
    Random,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Prefix => write!(f, "bad prefix: a token starts with {PREFIX:?}"),
            TokenError::Base45(e) => write!(f, "bad Base45: {e}"),
            TokenError::Length(n) => write!(f, "wrong length: {n} bytes, a token has {BYTES}"),
            TokenError::Version(v) => write!(f, "unknown token version {v}"),
            TokenError::Kid => f.write_str("malformed kid"),
            TokenError::IdCheck => f.write_str("bad ID check character"),
            TokenError::UnknownKid(k) => write!(f, "unknown kid {k}"),
            TokenError::RevokedKid(k) => write!(f, "revoked kid {k}"),
            TokenError::Signature => f.write_str("bad signature"),
            TokenError::TooOld { age_s, max_age_s } => {
                write!(f, "too old: issued {age_s} s ago, maximum age {max_age_s} s")
            }
            TokenError::Future { ahead_s } => {
                write!(f, "issued {ahead_s} s in the future (clock skew?)")
            }
            TokenError::Clock => f.write_str("issue time outside 2020-01-01 .. 2156"),
            TokenError::Random => f.write_str("the operating system's random generator failed"),
        }
    }
}

impl std::error::Error for TokenError {}

/// Most threads `SigningKey::issue_many_at` signs with, and the fewest tokens per thread.
pub const ISSUE_THREADS: usize = 8;
const ISSUE_CHUNK_MIN: usize = 256;

/// A decoded token. `Debug` does not print the access code.
#[derive(Clone)]
pub struct Token {
    pub id: RxId,
    pub access_code: AccessCode,
    pub kid: Kid,
    /// Seconds since the ID epoch.
    pub issued_at: u32,
    pub signature: [u8; 64],
}

impl Token {
    /// The signed part, [`SIGNED_LEN`] bytes.
    pub fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut b = [0u8; SIGNED_LEN];
        b[0] = VERSION;
        b[1..11].copy_from_slice(self.id.as_bytes());
        b[11..27].copy_from_slice(self.access_code.as_bytes());
        b[27..31].copy_from_slice(&self.kid.0);
        b[31..35].copy_from_slice(&self.issued_at.to_be_bytes());
        b
    }

    pub fn to_bytes(&self) -> [u8; BYTES] {
        let mut b = [0u8; BYTES];
        b[..SIGNED_LEN].copy_from_slice(&self.signed_bytes());
        b[SIGNED_LEN..].copy_from_slice(&self.signature);
        b
    }

    pub fn text(&self) -> String {
        let mut s = String::with_capacity(TEXT_LEN);
        s.push_str(PREFIX);
        base45::encode_into(&self.to_bytes(), &mut s);
        s
    }

    /// Issue time in Unix milliseconds.
    pub fn issued_at_unix_ms(&self) -> i64 {
        EPOCH_UNIX_MS as i64 + i64::from(self.issued_at) * 1000
    }

    /// Parses the text without checking the signature: prefix, Base45, length, version,
    /// kid form and ID check character.
    pub fn decode(text: &str) -> Result<Token, TokenError> {
        let body = text.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let b = base45::decode(body).map_err(TokenError::Base45)?;
        let b: [u8; BYTES] = b.as_slice().try_into().map_err(|_| TokenError::Length(b.len()))?;
        if b[0] != VERSION {
            return Err(TokenError::Version(b[0]));
        }
        let mut id = [0u8; 10];
        id.copy_from_slice(&b[1..11]);
        let mut code = [0u8; 16];
        code.copy_from_slice(&b[11..27]);
        let kid = Kid::from_bytes([b[27], b[28], b[29], b[30]]).ok_or(TokenError::Kid)?;
        let issued_at = u32::from_be_bytes([b[31], b[32], b[33], b[34]]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[SIGNED_LEN..]);
        let id = RxId::from_bytes(id);
        if !id.is_issuable() {
            return Err(TokenError::IdCheck);
        }
        Ok(Token { id, access_code: AccessCode::from_bytes(code), kid, issued_at, signature })
    }
}

/// `DOMAIN || signed bytes`: the message the signature covers.
fn message(signed: &[u8; SIGNED_LEN]) -> [u8; DOMAIN.len() + SIGNED_LEN] {
    let mut m = [0u8; DOMAIN.len() + SIGNED_LEN];
    m[..DOMAIN.len()].copy_from_slice(DOMAIN);
    m[DOMAIN.len()..].copy_from_slice(signed);
    m
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes().ct_eq(&other.to_bytes()).into()
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(id={}, kid={}, issued_at={})", self.id, self.kid, self.issued_at)
    }
}

/// An Ed25519 signing key with its kid. `Debug` does not print the key.
#[derive(Clone)]
pub struct SigningKey {
    kid: Kid,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Result<SigningKey, KeyError> {
        let kid = Kid::parse(kid)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|_| KeyError::Random)?;
        Ok(SigningKey { kid, key: ed25519_dalek::SigningKey::from_bytes(&seed) })
    }

    /// From the 32-byte seed (RFC 8032 private key).
    pub fn from_bytes(kid: &str, seed: &[u8]) -> Result<SigningKey, KeyError> {
        let kid = Kid::parse(kid)?;
        let seed: &[u8; 32] = seed.try_into().map_err(|_| KeyError::SeedLength(seed.len()))?;
        Ok(SigningKey { kid, key: ed25519_dalek::SigningKey::from_bytes(seed) })
    }

    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), v1 or v2.
    pub fn from_pem(kid: &str, pem: &str) -> Result<SigningKey, KeyError> {
        let kid = Kid::parse(kid)?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(SigningKey { kid, key })
    }

    pub fn kid(&self) -> Kid {
        self.kid
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// PKCS#8 v1 PEM (the RFC 8410 form OpenSSL and `cryptography` write).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let kp = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = kp.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(pem.to_string())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { kid: self.kid, key: self.key.verifying_key() }
    }

    /// Raw Ed25519 signature of `message` (no domain separation: the caller's business).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A token for `id` with a fresh access code, issued at `unix_ms`.
    pub fn issue_at(&self, id: RxId, unix_ms: i64) -> Result<Token, TokenError> {
        let secs = unix_ms.checked_sub(EPOCH_UNIX_MS as i64).ok_or(TokenError::Clock)?;
        let issued_at = u32::try_from(secs.div_euclid(1000)).map_err(|_| TokenError::Clock)?;
        let access_code = AccessCode::generate().map_err(|_| TokenError::Random)?;
        self.issue_with(id, access_code, issued_at)
    }

    /// Tokens for many IDs, each with a fresh access code, all issued at `unix_ms`, in the
    /// order of `ids`. The access codes come from one OS random read; the signing (~20 µs
    /// per token, the whole cost) is split over up to [`ISSUE_THREADS`] scoped threads for
    /// large batches. Fails as a whole (`IdCheck`) if any ID is not one ordonum issues.
    pub fn issue_many_at(&self, ids: &[RxId], unix_ms: i64) -> Result<Vec<Token>, TokenError> {
        let secs = unix_ms.checked_sub(EPOCH_UNIX_MS as i64).ok_or(TokenError::Clock)?;
        let issued_at = u32::try_from(secs.div_euclid(1000)).map_err(|_| TokenError::Clock)?;
        if !ids.iter().all(RxId::is_issuable) {
            return Err(TokenError::IdCheck);
        }
        let mut random = Zeroizing::new(vec![0u8; ids.len() * 16]);
        getrandom::fill(&mut random).map_err(|_| TokenError::Random)?;
        let sign = |ids: &[RxId], random: &[u8]| -> Vec<Token> {
            ids.iter()
                .zip(random.chunks_exact(16))
                .map(|(id, r)| {
                    let mut code = [0u8; 16];
                    code.copy_from_slice(r);
                    let mut t = Token {
                        id: *id,
                        access_code: AccessCode::from_bytes(code),
                        kid: self.kid,
                        issued_at,
                        signature: [0; 64],
                    };
                    t.signature = self.key.sign(&message(&t.signed_bytes())).to_bytes();
                    t
                })
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(ISSUE_THREADS)
            .min(ids.len().div_ceil(ISSUE_CHUNK_MIN))
            .max(1);
        if threads == 1 {
            return Ok(sign(ids, &random));
        }
        let per = ids.len().div_ceil(threads);
        let parts: Vec<Vec<Token>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .chunks(per)
                .zip(random.chunks(per * 16))
                .map(|(ids, random)| scope.spawn(move || sign(ids, random)))
                .collect();
            // A signing thread cannot panic (no indexing, no unwrap); if one did, its tokens
            // would be missing and the length check below refuses the batch.
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let out: Vec<Token> = parts.into_iter().flatten().collect();
        if out.len() != ids.len() {
            return Err(TokenError::Random);
        }
        Ok(out)
    }

    /// A token with a given access code and issue time (seconds since the ID epoch).
    pub fn issue_with(
        &self,
        id: RxId,
        access_code: AccessCode,
        issued_at: u32,
    ) -> Result<Token, TokenError> {
        if !id.is_issuable() {
            return Err(TokenError::IdCheck);
        }
        let mut t = Token { id, access_code, kid: self.kid, issued_at, signature: [0; 64] };
        t.signature = self.key.sign(&message(&t.signed_bytes())).to_bytes();
        Ok(t)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(kid={})", self.kid)
    }
}

/// An Ed25519 verifying (public) key with its kid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey {
    kid: Kid,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifyingKey {
    fn checked(kid: Kid, key: ed25519_dalek::VerifyingKey) -> Result<VerifyingKey, KeyError> {
        if key.is_weak() || !key.to_edwards().is_torsion_free() {
            return Err(KeyError::PublicKey);
        }
        Ok(VerifyingKey { kid, key })
    }

    pub fn from_bytes(kid: &str, raw: &[u8]) -> Result<VerifyingKey, KeyError> {
        let kid = Kid::parse(kid)?;
        let raw: &[u8; 32] = raw.try_into().map_err(|_| KeyError::PublicKeyLength(raw.len()))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| KeyError::PublicKey)?;
        Self::checked(kid, key)
    }

    /// From a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(kid: &str, pem: &str) -> Result<VerifyingKey, KeyError> {
        let kid = Kid::parse(kid)?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Self::checked(kid, key)
    }

    pub fn kid(&self) -> Kid {
        self.kid
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key.to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Pem(e.to_string()))
    }

    /// Strict Ed25519 verification of a raw signature.
    pub fn verify(&self, signature: &[u8], message: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey(kid={})", self.kid)
    }
}

/// The verifying keys a verifier trusts: several active kids (rotation), revoked kids
/// (refused for good), and an optional maximum token age.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    active: BTreeMap<Kid, VerifyingKey>,
    revoked: BTreeSet<Kid>,
    max_age_ms: Option<u64>,
}

impl KeyRing {
    pub fn new(max_age_ms: Option<u64>) -> KeyRing {
        KeyRing { max_age_ms, ..KeyRing::default() }
    }

    /// Adds a key. Adding the same key twice is harmless; a revoked kid, or a kid already
    /// active with another key, is refused.
    pub fn add(&mut self, key: VerifyingKey) -> Result<(), KeyError> {
        if self.revoked.contains(&key.kid) {
            return Err(KeyError::Revoked(key.kid));
        }
        match self.active.get(&key.kid) {
            Some(k) if *k != key => Err(KeyError::Taken(key.kid)),
            _ => {
                self.active.insert(key.kid, key);
                Ok(())
            }
        }
    }

    /// Revokes a kid, known or not: every token it signed is refused from now on.
    pub fn revoke(&mut self, kid: Kid) {
        self.active.remove(&kid);
        self.revoked.insert(kid);
    }

    pub fn kids(&self) -> impl Iterator<Item = Kid> + '_ {
        self.active.keys().copied()
    }

    pub fn revoked(&self) -> impl Iterator<Item = Kid> + '_ {
        self.revoked.iter().copied()
    }

    pub fn get(&self, kid: Kid) -> Option<&VerifyingKey> {
        self.active.get(&kid)
    }

    pub fn max_age_ms(&self) -> Option<u64> {
        self.max_age_ms
    }

    pub fn set_max_age_ms(&mut self, max_age_ms: Option<u64>) {
        self.max_age_ms = max_age_ms;
    }

    /// Decodes and finds the key: everything but the signature and the age.
    fn prepare(&self, text: &str) -> Result<(Token, &VerifyingKey), TokenError> {
        let t = Token::decode(text)?;
        match self.active.get(&t.kid) {
            Some(k) => Ok((t, k)),
            None if self.revoked.contains(&t.kid) => Err(TokenError::RevokedKid(t.kid)),
            None => Err(TokenError::UnknownKid(t.kid)),
        }
    }

    fn check_age(&self, t: &Token, now_ms: i64) -> Result<(), TokenError> {
        let Some(max) = self.max_age_ms else {
            return Ok(());
        };
        let age_ms = now_ms.saturating_sub(t.issued_at_unix_ms());
        if age_ms < -FUTURE_SKEW_MS {
            return Err(TokenError::Future { ahead_s: -age_ms / 1000 });
        }
        if age_ms > 0 && age_ms as u64 > max {
            return Err(TokenError::TooOld { age_s: age_ms / 1000, max_age_s: max / 1000 });
        }
        Ok(())
    }

    /// Verifies a token text at the time `now_ms` (Unix milliseconds).
    pub fn verify_at(&self, text: &str, now_ms: i64) -> Result<Token, TokenError> {
        let (t, key) = self.prepare(text)?;
        let sig = Signature::from_bytes(&t.signature);
        key.key
            .verify_strict(&message(&t.signed_bytes()), &sig)
            .map_err(|_| TokenError::Signature)?;
        self.check_age(&t, now_ms)?;
        Ok(t)
    }

    /// Verifies many token texts; batch verification from [`BATCH_MIN`] signatures on.
    pub fn verify_many_at<S: AsRef<str>>(
        &self,
        texts: &[S],
        now_ms: i64,
    ) -> Vec<Result<Token, TokenError>> {
        let mut out: Vec<Result<Token, TokenError>> = Vec::with_capacity(texts.len());
        let mut pending: Vec<(usize, &VerifyingKey)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match self.prepare(text.as_ref()) {
                Ok((t, k)) => {
                    out.push(Ok(t));
                    pending.push((i, k));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let batch_ok = pending.len() >= BATCH_MIN && {
            let mut msgs = Vec::with_capacity(pending.len());
            let mut sigs = Vec::with_capacity(pending.len());
            let mut keys = Vec::with_capacity(pending.len());
            for &(i, k) in &pending {
                if let Ok(t) = &out[i] {
                    msgs.push(message(&t.signed_bytes()));
                    sigs.push(Signature::from_bytes(&t.signature));
                    keys.push(k.key);
                }
            }
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
        };
        for (i, k) in pending {
            let verdict = match &out[i] {
                Ok(t) => {
                    let signed = batch_ok || {
                        let sig = Signature::from_bytes(&t.signature);
                        k.key.verify_strict(&message(&t.signed_bytes()), &sig).is_ok()
                    };
                    if signed {
                        self.check_age(t, now_ms)
                    } else {
                        Err(TokenError::Signature)
                    }
                }
                Err(_) => continue,
            };
            if let Err(e) = verdict {
                out[i] = Err(e);
            }
        }
        out
    }
}

/// Token texts a [`KeyRing`] accepted, so that the same exact text is accepted again
/// without its signature being checked.
///
/// A visit at the pharmacy counter sends one QR token two to four times (the scan, then each
/// dispensation request), and the Ed25519 check is most of a verification's cost. A
/// signature over an exact text never stops being valid, so a remembered text is accepted
/// again after the checks that can change: the key that verified it still active under its
/// kid in the ring given (compared as a key, not as a kid: the cache may be asked with
/// another ring), its age within that ring's maximum at `now`. That is exactly the decision
/// a full verification would make. A refused text is never remembered. At most `size` texts
/// are kept; the oldest remembered goes first (first in, first out: a hit does not renew).
///
/// Held in Rust rather than in a Python dict: a remembered token is then no Python object,
/// so the interpreter's cyclic collector has nothing to walk (measured in the service: the
/// dict of `Token` objects made each young-generation collection a 30 ms pause).
pub struct TokenCache {
    size: usize,
    /// text -> (token, the key that verified it, insertion number)
    known: HashMap<Arc<str>, (Token, VerifyingKey, u64)>,
    /// (insertion number, text), oldest first; an entry whose number no longer matches
    /// `known` was forgotten early (its kid revoked, or too old) and is skipped.
    order: VecDeque<(u64, Arc<str>)>,
    next: u64,
    hits: u64,
    checks: u64,
}

/// Counts only: the texts carry access codes.
impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("size", &self.size)
            .field("len", &self.known.len())
            .field("hits", &self.hits)
            .field("checks", &self.checks)
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `size` texts (at least 1).
    pub fn new(size: usize) -> Result<TokenCache, KeyError> {
        if size == 0 {
            return Err(KeyError::CacheSize);
        }
        Ok(TokenCache {
            size,
            known: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            hits: 0,
            checks: 0,
        })
    }

    /// The remembered token of `text` if `ring` would accept it at `now_ms`; a remembered
    /// text it would not accept any more is forgotten (the caller then checks it in full,
    /// which says why).
    pub fn lookup(&mut self, ring: &KeyRing, text: &str, now_ms: i64) -> Option<Token> {
        let (token, key, _) = self.known.get(text)?;
        // The very key that checked the signature, still active under its kid in `ring`
        // (not merely the kid: a cache could be asked with another ring).
        if ring.get(token.kid) == Some(key) && ring.check_age(token, now_ms).is_ok() {
            self.hits += 1;
            return Some(token.clone());
        }
        self.known.remove(text);
        None
    }

    /// Remembers `token`, which `ring` just accepted in full for `text` (with the key that
    /// `ring` holds for its kid; nothing if the kid was revoked meanwhile). Counts a check
    /// either way, even when another thread remembered the same text first.
    pub fn remember(&mut self, ring: &KeyRing, text: &str, token: &Token) {
        self.checks += 1;
        let Some(key) = ring.get(token.kid).copied() else {
            return;
        };
        if self.known.contains_key(text) {
            return;
        }
        while self.known.len() >= self.size {
            match self.order.pop_front() {
                Some((n, old)) => {
                    if self.known.get(&old).is_some_and(|(_, _, m)| *m == n) {
                        self.known.remove(&old);
                    }
                }
                None => break, // unreachable: every remembered text has its entry
            }
        }
        // Entries forgotten early stay in `order` until they reach its front: keep it
        // within twice the size.
        if self.order.len() >= self.size.saturating_mul(2) {
            let known = &self.known;
            self.order.retain(|(n, t)| known.get(t).is_some_and(|(_, _, m)| m == n));
        }
        let n = self.next;
        self.next += 1;
        let text: Arc<str> = text.into();
        self.known.insert(Arc::clone(&text), (token.clone(), key, n));
        self.order.push_back((n, text));
    }

    /// [`KeyRing::verify_at`], remembering what it accepts.
    pub fn verify_at(
        &mut self,
        ring: &KeyRing,
        text: &str,
        now_ms: i64,
    ) -> Result<Token, TokenError> {
        if let Some(t) = self.lookup(ring, text, now_ms) {
            return Ok(t);
        }
        let t = ring.verify_at(text, now_ms)?;
        self.remember(ring, text, &t);
        Ok(t)
    }

    /// Texts remembered now.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Texts accepted from memory, without a signature check.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Texts accepted after a full check (each then remembered, unless another thread
    /// remembered it first or its kid was revoked meanwhile).
    pub fn checks(&self) -> u64 {
        self.checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdGenerator;
    use proptest::prelude::*;

    const NOW: i64 = 1_780_000_000_000; // 2026-05-28

    fn some_id() -> RxId {
        IdGenerator::new(42).unwrap().next_at(NOW as u64).unwrap()
    }

    fn key(kid: &str, seed: u8) -> SigningKey {
        SigningKey::from_bytes(kid, &[seed; 32]).unwrap()
    }

    #[test]
    fn issue_many_signs_each_id_in_order_with_distinct_codes() {
        let k = key("FR01", 7);
        let r = ring(&[&k]);
        let g = IdGenerator::new(42).unwrap();
        // 0, 1, a single-thread batch and one split over several threads.
        for n in [0usize, 1, 5, 2 * ISSUE_CHUNK_MIN + 3] {
            let ids: Vec<RxId> = (0..n).map(|_| g.next_at(NOW as u64).unwrap()).collect();
            let tokens = k.issue_many_at(&ids, NOW).unwrap();
            assert_eq!(tokens.len(), n);
            let mut codes = BTreeSet::new();
            for (t, id) in tokens.iter().zip(&ids) {
                assert_eq!(t.id, *id);
                assert_eq!(t.issued_at_unix_ms(), NOW / 1000 * 1000);
                let back = r.verify_at(&t.text(), NOW).unwrap();
                assert_eq!(&back, t);
                assert!(codes.insert(t.access_code.text()), "access code repeated");
            }
        }
        assert_eq!(k.issue_many_at(&[some_id()], 0).err(), Some(TokenError::Clock));
    }

    fn ring(keys: &[&SigningKey]) -> KeyRing {
        let mut r = KeyRing::new(None);
        for k in keys {
            r.add(k.verifying_key()).unwrap();
        }
        r
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(SIGNED_LEN, 35);
        assert_eq!(BYTES, 99);
        assert_eq!(TEXT_LEN, 153);
        let t = key("FR01", 1).issue_at(some_id(), NOW).unwrap();
        let text = t.text();
        assert_eq!(text.len(), TEXT_LEN);
        assert!(text.starts_with("RX1:"));
        let b = t.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..11], some_id().as_bytes());
        assert_eq!(&b[27..31], b"FR01");
        let secs = ((NOW - EPOCH_UNIX_MS as i64) / 1000) as u32;
        assert_eq!(b[31..35], secs.to_be_bytes());
        assert_eq!(base45::decode(&text[4..]).unwrap(), b.to_vec());
    }

    #[test]
    fn round_trip_and_signature_is_over_domain_and_content() {
        let k = key("FR01", 1);
        let r = ring(&[&k]);
        let t = k.issue_at(some_id(), NOW).unwrap();
        let v = r.verify_at(&t.text(), NOW).unwrap();
        assert_eq!(v, t);
        assert_eq!(v.issued_at_unix_ms(), NOW / 1000 * 1000);
        // The signature is plain Ed25519 over DOMAIN || content: an independent check.
        let vk = k.verifying_key();
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(&t.to_bytes()[..SIGNED_LEN]);
        assert!(vk.verify(&t.signature, &m));
        assert!(!vk.verify(&t.signature, &t.to_bytes()[..SIGNED_LEN]));
    }

    #[test]
    fn every_failure_has_its_reason() {
        let k = key("FR01", 1);
        let other = key("FR01", 2);
        let k2 = key("FR02", 3);
        let mut r = ring(&[&k, &k2]);
        let t = k.issue_at(some_id(), NOW).unwrap();
        let text = t.text();
        let v = |s: &str| ring(&[&k, &k2]).verify_at(s, NOW).unwrap_err();
        assert_eq!(v(&text[1..]), TokenError::Prefix);
        assert_eq!(v(&text.to_lowercase()), TokenError::Prefix);
        let lower = format!("RX1:{}", text[4..].to_lowercase());
        assert!(matches!(v(&lower), TokenError::Base45(_)));
        assert_eq!(v(&text[..text.len() - 2]), TokenError::Length(98));
        let mut b = t.to_bytes();
        b[0] = 2;
        assert_eq!(v(&format!("RX1:{}", base45::encode(&b))), TokenError::Version(2));
        let mut b = t.to_bytes();
        b[28] = b'r';
        assert_eq!(v(&format!("RX1:{}", base45::encode(&b))), TokenError::Kid);
        let forged = other.issue_at(some_id(), NOW).unwrap();
        assert_eq!(v(&forged.text()), TokenError::Signature);
        let unknown = key("XX99", 9).issue_at(some_id(), NOW).unwrap();
        assert_eq!(v(&unknown.text()), TokenError::UnknownKid(Kid::parse("XX99").unwrap()));
        // An unissuable ID, properly signed: refused on its check character.
        let bad_id = (0u16..)
            .map(|s| RxId::from_parts(1, 1, s).unwrap())
            .find(|id| !id.is_issuable())
            .unwrap();
        assert_eq!(k.issue_with(bad_id, t.access_code, 0).unwrap_err(), TokenError::IdCheck);
        let mut tb = t.clone();
        tb.id = bad_id;
        tb.signature = k.sign(&message(&tb.signed_bytes()));
        assert_eq!(v(&tb.text()), TokenError::IdCheck);
        // Age.
        r.set_max_age_ms(Some(600_000));
        assert!(r.verify_at(&text, NOW + 600_000).is_ok());
        assert_eq!(
            r.verify_at(&text, NOW + 601_000).unwrap_err(),
            TokenError::TooOld { age_s: 601, max_age_s: 600 }
        );
        assert!(r.verify_at(&text, NOW - FUTURE_SKEW_MS).is_ok());
        assert_eq!(
            r.verify_at(&text, NOW - FUTURE_SKEW_MS - 1000).unwrap_err(),
            TokenError::Future { ahead_s: 301 }
        );
        // Revocation, and a revoked kid cannot come back.
        r.revoke(k.kid());
        assert_eq!(r.verify_at(&text, NOW).unwrap_err(), TokenError::RevokedKid(k.kid()));
        assert_eq!(r.add(k.verifying_key()), Err(KeyError::Revoked(k.kid())));
        assert_eq!(r.kids().collect::<Vec<_>>(), vec![k2.kid()]);
        assert_eq!(r.add(key("FR02", 4).verifying_key()), Err(KeyError::Taken(k2.kid())));
        assert_eq!(r.add(k2.verifying_key()), Ok(()));
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(SigningKey::generate("fr01").unwrap_err(), KeyError::Kid("fr01".into()));
        assert_eq!(SigningKey::generate("FR0").unwrap_err(), KeyError::Kid("FR0".into()));
        assert_eq!(SigningKey::from_bytes("FR01", &[0; 31]).unwrap_err(), KeyError::SeedLength(31));
        // The identity point (small order) is refused.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert_eq!(VerifyingKey::from_bytes("FR01", &ident).unwrap_err(), KeyError::PublicKey);
        let a = SigningKey::generate("FR01").unwrap();
        let b = SigningKey::generate("FR01").unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        let pem = a.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(SigningKey::from_pem("FR01", &pem).unwrap().to_bytes(), a.to_bytes());
        let vpem = a.verifying_key().to_pem().unwrap();
        assert!(vpem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(VerifyingKey::from_pem("FR01", &vpem).unwrap(), a.verifying_key());
        assert!(matches!(SigningKey::from_pem("FR01", "nope"), Err(KeyError::Pem(_))));
    }

    #[test]
    fn batch_agrees_with_single_and_finds_the_culprits() {
        let k = key("FR01", 1);
        let k2 = key("FR02", 2);
        let r = ring(&[&k, &k2]);
        let g = IdGenerator::new(1).unwrap();
        let mut texts: Vec<String> = (0..40)
            .map(|i| {
                let id = g.next_at(NOW as u64).unwrap();
                if i % 2 == 0 { &k } else { &k2 }.issue_at(id, NOW).unwrap().text()
            })
            .collect();
        let all = r.verify_many_at(&texts, NOW);
        assert!(all.iter().all(Result::is_ok));
        texts[7] = key("FR02", 9).issue_at(some_id(), NOW).unwrap().text();
        texts[30] = "garbage".into();
        let got = r.verify_many_at(&texts, NOW);
        for (i, (g, t)) in got.iter().zip(&texts).enumerate() {
            assert_eq!(g, &r.verify_at(t, NOW), "token {i}");
        }
        assert_eq!(got[7], Err(TokenError::Signature));
        assert_eq!(got[30], Err(TokenError::Prefix));
        assert!(r.verify_many_at::<&str>(&[], NOW).is_empty());
    }

    #[test]
    #[ignore = "timing, run on demand"]
    fn batch_threshold() {
        let k = key("FR01", 1);
        let r = ring(&[&k]);
        let g = IdGenerator::new(1).unwrap();
        for n in [1usize, 2, 3, 4, 8, 16, 64, 256] {
            let texts: Vec<String> = (0..n)
                .map(|_| k.issue_at(g.next_at(NOW as u64).unwrap(), NOW).unwrap().text())
                .collect();
            let reps = 4096 / n;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                for t in &texts {
                    assert!(r.verify_at(t, NOW).is_ok());
                }
            }
            let single = t0.elapsed().as_secs_f64() / (reps * n) as f64;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                let refs: Vec<(usize, &VerifyingKey)> =
                    (0..n).map(|i| (i, r.get(k.kid()).unwrap())).collect();
                let toks: Vec<Token> = texts.iter().map(|t| Token::decode(t).unwrap()).collect();
                let msgs: Vec<_> = toks.iter().map(|t| message(&t.signed_bytes())).collect();
                let m: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
                let s: Vec<Signature> =
                    toks.iter().map(|t| Signature::from_bytes(&t.signature)).collect();
                let keys: Vec<_> = refs.iter().map(|(_, k)| k.key).collect();
                assert!(ed25519_dalek::verify_batch(&m, &s, &keys).is_ok());
            }
            let batch = t0.elapsed().as_secs_f64() / (reps * n) as f64;
            println!("n={n:4} single {:.1} µs  batch {:.1} µs", single * 1e6, batch * 1e6);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_token_round_trips(seed: [u8; 32], code: [u8; 16], at: u32, ts in 0u64..1 << 42, node in 0u32..1 << 22, seq: u16) {
            let id = RxId::from_parts(ts, node, seq).unwrap();
            prop_assume!(id.is_issuable());
            let k = SigningKey::from_bytes("AB12", &seed).unwrap();
            let t = k.issue_with(id, AccessCode::from_bytes(code), at).unwrap();
            let text = t.text();
            prop_assert_eq!(text.len(), TEXT_LEN);
            prop_assert_eq!(ring(&[&k]).verify_at(&text, 0), Ok(t));
        }

        #[test]
        fn any_single_character_change_is_refused(pos in 0usize..TEXT_LEN, sym in 0usize..45) {
            let k = key("FR01", 1);
            let text = k.issue_at(some_id(), NOW).unwrap().text();
            let mut b = text.clone().into_bytes();
            prop_assume!(b[pos] != base45::ALPHABET[sym]);
            b[pos] = base45::ALPHABET[sym];
            let m = String::from_utf8(b).unwrap();
            prop_assert!(ring(&[&k]).verify_at(&m, NOW).is_err());
        }
    }

    #[test]
    fn token_cache_checks_a_text_once_and_refusals_never() {
        let k = key("FR01", 1);
        let r = ring(&[&k]);
        let mut c = TokenCache::new(10).unwrap();
        let t = k.issue_at(some_id(), NOW).unwrap();
        let text = t.text();
        for _ in 0..3 {
            assert_eq!(c.verify_at(&r, &text, NOW).unwrap(), t);
        }
        assert_eq!((c.checks(), c.hits(), c.len()), (1, 2, 1));
        let mut forged = text.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        for _ in 0..2 {
            assert!(c.verify_at(&r, &forged, NOW).is_err());
        }
        assert_eq!((c.checks(), c.hits(), c.len()), (1, 2, 1));
        assert_eq!(TokenCache::new(0).unwrap_err(), KeyError::CacheSize);
    }

    #[test]
    fn token_cache_decides_as_a_full_check_after_revocation_and_in_time() {
        let k = key("FR01", 1);
        let mut r = ring(&[&k]);
        let mut c = TokenCache::new(10).unwrap();
        let text = k.issue_at(some_id(), NOW).unwrap().text();
        c.verify_at(&r, &text, NOW).unwrap();
        // too old, then in the future: refused from memory as by a full check
        r.set_max_age_ms(Some(60_000));
        assert!(c.verify_at(&r, &text, NOW + 30_000).is_ok());
        let late = c.verify_at(&r, &text, NOW + 61_000).unwrap_err();
        assert_eq!(late, r.verify_at(&text, NOW + 61_000).unwrap_err());
        assert!(c.is_empty());
        c.verify_at(&r, &text, NOW).unwrap();
        let early = NOW - FUTURE_SKEW_MS - 1000;
        assert_eq!(
            c.verify_at(&r, &text, early).unwrap_err(),
            r.verify_at(&text, early).unwrap_err()
        );
        // revoked
        c.verify_at(&r, &text, NOW).unwrap();
        r.revoke(k.verifying_key().kid);
        assert_eq!(
            c.verify_at(&r, &text, NOW).unwrap_err(),
            TokenError::RevokedKid(k.verifying_key().kid)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn token_cache_forgets_the_first_remembered_first_and_stays_bounded() {
        let k = key("FR01", 1);
        let mut r = ring(&[&k]);
        let g = IdGenerator::new(42).unwrap();
        let t: Vec<String> = (0..5)
            .map(|_| k.issue_at(g.next_at(NOW as u64).unwrap(), NOW).unwrap().text())
            .collect();
        let (a, b, cc, d, e) = (&t[0], &t[1], &t[2], &t[3], &t[4]);
        // First in, first out (a hit does not renew): a is forgotten when c comes although
        // it was just used; least-recently-used would have kept it (3 checks, 2 hits).
        let mut c = TokenCache::new(2).unwrap();
        for x in [a, b, a, cc, a] {
            c.verify_at(&r, x, NOW).unwrap();
        }
        assert_eq!((c.checks(), c.hits(), c.len()), (4, 1, 2));
        // Forgotten early, then remembered again: its new place counts. b is refused from
        // memory (too old), checked again and remembered after c; d then evicts a, and e
        // evicts c, skipping b's stale first place, not b.
        let mut c = TokenCache::new(3).unwrap();
        for x in [a, b, cc] {
            c.verify_at(&r, x, NOW).unwrap();
        }
        r.set_max_age_ms(Some(1000));
        assert!(c.verify_at(&r, b, NOW + 5000).is_err());
        assert_eq!(c.len(), 2);
        r.set_max_age_ms(None);
        for x in [b, d, e] {
            c.verify_at(&r, x, NOW).unwrap();
        }
        let before = (c.checks(), c.hits());
        for x in [b, d, e] {
            c.verify_at(&r, x, NOW).unwrap();
        }
        assert_eq!((c.checks(), c.hits()), (before.0, before.1 + 3), "b, d, e remembered");
        c.verify_at(&r, a, NOW).unwrap();
        assert_eq!(c.checks(), before.0 + 1, "a was forgotten");
        // Churn through entries forgotten early: the queue stays within twice the size.
        for _ in 0..50 {
            r.set_max_age_ms(Some(1000));
            let _ = c.verify_at(&r, b, NOW + 5000);
            r.set_max_age_ms(None);
            c.verify_at(&r, b, NOW).unwrap();
        }
        assert!(c.order.len() <= 2 * c.size());
        assert!(c.len() <= c.size());
    }

    #[test]
    fn token_cache_asked_with_another_ring_checks_the_key_not_the_kid() {
        let k = key("FR01", 1);
        let other = key("FR01", 2); // the same kid, another key
        let mut c = TokenCache::new(10).unwrap();
        let text = k.issue_at(some_id(), NOW).unwrap().text();
        c.verify_at(&ring(&[&k]), &text, NOW).unwrap();
        let theirs = ring(&[&other]);
        assert_eq!(c.verify_at(&theirs, &text, NOW).unwrap_err(), TokenError::Signature);
        assert_eq!((c.checks(), c.hits()), (1, 0));
    }
}
