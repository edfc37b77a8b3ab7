//! Bindings for [`crate::token`]: `SigningKey`, `VerifyingKey`, `KeyRing`, `Token`,
//! `TokenCache`, `issue_token[_at]`, `issue_tokens[_at]`, `verify_token[_at]`, `verify_tokens`,
//! `diagnose_token`, `parse_access_code`.
//!
//! Every verification failure becomes the same `InvalidToken(INVALID_TOKEN)`; the reason
//! only comes out of `diagnose_token`. The key ring sits behind a `RwLock`, taken with the
//! interpreter detached except for `TokenCache`'s memory (a read held for a hash lookup,
//! after the cache's own lock: always in that order).

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDateTime, PyList, PyString, PyTzInfo, PyTzInfoAccess};

use super::errors::{InvalidId, InvalidToken};
use super::id::{ascii, id_arg, str_arg};
use crate::access::{AccessCode, AccessCodeError};
use crate::id::{unix_now_ms, RxId};
use crate::token::{
    self, KeyError, KeyRing, Kid, SigningKey, Token, TokenCache, TokenError, VerifyingKey,
};

/// The one message of every `InvalidToken`.
const INVALID_TOKEN: &str = "invalid prescription token";

impl From<KeyError> for PyErr {
    fn from(e: KeyError) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

impl From<TokenError> for PyErr {
    fn from(e: TokenError) -> PyErr {
        match e {
            TokenError::Clock | TokenError::Random => PyValueError::new_err(e.to_string()),
            _ => InvalidToken::new_err(INVALID_TOKEN),
        }
    }
}

impl From<AccessCodeError> for PyErr {
    fn from(e: AccessCodeError) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

/// `str` or `bytes` (PEM), as text.
fn pem_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return String::from_utf8(b.as_bytes().to_vec())
            .map_err(|_| PyValueError::new_err("cannot read the PEM key: not UTF-8 text"));
    }
    Err(PyTypeError::new_err(format!("pem must be str or bytes, not {}", obj.get_type().name()?)))
}

fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be bytes, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// Unix milliseconds of an aware `datetime`.
fn now_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let dt = obj.cast::<PyDateTime>().map_err(|_| {
        PyTypeError::new_err(match obj.get_type().name() {
            Ok(n) => format!("now must be a datetime, not {n}"),
            Err(_) => "now must be a datetime".to_owned(),
        })
    })?;
    if dt.get_tzinfo().is_none() || dt.call_method0("utcoffset")?.is_none() {
        return Err(PyValueError::new_err("now must be an aware datetime (with a tzinfo)"));
    }
    let ts: f64 = dt.call_method0("timestamp")?.extract()?;
    Ok((ts * 1000.0).floor() as i64)
}

#[pyclass(name = "SigningKey", module = "ordonum._core", frozen)]
pub struct PySigningKey(SigningKey);

#[pymethods]
impl PySigningKey {
    #[staticmethod]
    fn generate(kid: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PySigningKey(SigningKey::generate(str_arg(kid, "kid")?)?))
    }

    #[staticmethod]
    fn from_bytes(kid: &Bound<'_, PyAny>, raw: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PySigningKey(SigningKey::from_bytes(str_arg(kid, "kid")?, bytes_arg(raw, "raw")?)?))
    }

    #[staticmethod]
    fn from_pem(kid: &Bound<'_, PyAny>, pem: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PySigningKey(SigningKey::from_pem(str_arg(kid, "kid")?, &pem_arg(pem)?)?))
    }

    #[getter]
    fn kid<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.0.kid().as_str())
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    fn to_pem(&self) -> PyResult<String> {
        Ok(self.0.to_pem()?)
    }

    fn verifying_key(&self) -> PyVerifyingKey {
        PyVerifyingKey(self.0.verifying_key())
    }

    fn sign<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.sign(bytes_arg(message, "message")?)))
    }

    fn __repr__(&self) -> String {
        format!("SigningKey(kid='{}')", self.0.kid())
    }
}

#[pyclass(name = "VerifyingKey", module = "ordonum._core", frozen, eq)]
#[derive(PartialEq)]
pub struct PyVerifyingKey(VerifyingKey);

#[pymethods]
impl PyVerifyingKey {
    #[staticmethod]
    fn from_bytes(kid: &Bound<'_, PyAny>, raw: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyVerifyingKey(VerifyingKey::from_bytes(str_arg(kid, "kid")?, bytes_arg(raw, "raw")?)?))
    }

    #[staticmethod]
    fn from_pem(kid: &Bound<'_, PyAny>, pem: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyVerifyingKey(VerifyingKey::from_pem(str_arg(kid, "kid")?, &pem_arg(pem)?)?))
    }

    #[getter]
    fn kid<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.0.kid().as_str())
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    fn to_pem(&self) -> PyResult<String> {
        Ok(self.0.to_pem()?)
    }

    fn verify(&self, signature: &Bound<'_, PyAny>, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.0.verify(bytes_arg(signature, "signature")?, bytes_arg(message, "message")?))
    }

    fn __repr__(&self) -> String {
        format!("VerifyingKey(kid='{}')", self.0.kid())
    }
}

fn max_age_ms(max_age: Option<f64>) -> PyResult<Option<u64>> {
    match max_age {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s * 1000.0 < u64::MAX as f64 => {
            Ok(Some((s * 1000.0).round() as u64))
        }
        Some(_) => Err(KeyError::MaxAge.into()),
    }
}

#[pyclass(name = "KeyRing", module = "ordonum._core", frozen)]
pub struct PyKeyRing(RwLock<KeyRing>);

impl PyKeyRing {
    // Poisoning cannot leave a ring half-updated (every write is one map operation), so a
    // poisoned lock is used as is rather than turned into a panic.
    fn read(&self) -> RwLockReadGuard<'_, KeyRing> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, KeyRing> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyKeyRing {
    #[new]
    #[pyo3(signature = (keys = None, *, max_age = None))]
    fn py_new(keys: Option<&Bound<'_, PyAny>>, max_age: Option<f64>) -> PyResult<Self> {
        let mut ring = KeyRing::new(max_age_ms(max_age)?);
        if let Some(keys) = keys {
            for k in keys.try_iter()? {
                let k = k?;
                let vk = k
                    .cast::<PyVerifyingKey>()
                    .map_err(|_| PyTypeError::new_err("KeyRing takes VerifyingKey objects"))?;
                ring.add(vk.get().0)?;
            }
        }
        Ok(PyKeyRing(RwLock::new(ring)))
    }

    fn add(&self, py: Python<'_>, key: PyRef<'_, PyVerifyingKey>) -> PyResult<()> {
        let k = key.0;
        Ok(py.detach(|| self.write().add(k))?)
    }

    fn revoke(&self, py: Python<'_>, kid: &Bound<'_, PyAny>) -> PyResult<()> {
        let kid = Kid::parse(str_arg(kid, "kid")?)?;
        py.detach(|| self.write().revoke(kid));
        Ok(())
    }

    #[getter]
    fn kids(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| self.read().kids().map(|k| k.to_string()).collect())
    }

    #[getter]
    fn revoked(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| self.read().revoked().map(|k| k.to_string()).collect())
    }

    #[getter]
    fn get_max_age(&self, py: Python<'_>) -> Option<f64> {
        py.detach(|| self.read().max_age_ms().map(|ms| ms as f64 / 1000.0))
    }

    #[setter]
    fn set_max_age(&self, py: Python<'_>, max_age: Option<f64>) -> PyResult<()> {
        let ms = max_age_ms(max_age)?;
        py.detach(|| self.write().set_max_age_ms(ms));
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("KeyRing(kids={:?})", self.kids(py))
    }
}

#[pyclass(name = "Token", module = "ordonum._core", frozen, eq)]
#[derive(PartialEq)]
pub struct PyToken(Token);

#[pymethods]
impl PyToken {
    #[getter]
    fn text(&self) -> String {
        self.0.text()
    }

    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        ascii(py, &self.0.id.text_bytes())
    }

    #[getter]
    fn access_code(&self) -> String {
        self.0.access_code.text()
    }

    #[getter]
    fn kid<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.0.kid.as_str())
    }

    #[getter]
    fn issued_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDateTime>> {
        let utc = PyTzInfo::utc(py)?;
        PyDateTime::from_timestamp(py, self.0.issued_at_unix_ms() as f64 / 1000.0, Some(&utc))
    }

    fn __repr__(&self) -> String {
        // The access code is a secret: not in the repr.
        format!("Token(id='{}', kid='{}', issued_at={})", self.0.id, self.0.kid, self.0.issued_at)
    }
}

#[pyfunction]
fn issue_token(
    py: Python<'_>,
    key: PyRef<'_, PySigningKey>,
    rx_id: &Bound<'_, PyAny>,
) -> PyResult<PyToken> {
    let id = id_arg(rx_id)?;
    let key = &key.0;
    Ok(PyToken(py.detach(|| key.issue_at(id, unix_now_ms() as i64))?))
}

#[pyfunction]
fn issue_token_at(
    py: Python<'_>,
    key: PyRef<'_, PySigningKey>,
    rx_id: &Bound<'_, PyAny>,
    now: &Bound<'_, PyAny>,
) -> PyResult<PyToken> {
    let id = id_arg(rx_id)?;
    let now = now_arg(now)?;
    let key = &key.0;
    Ok(PyToken(py.detach(|| key.issue_at(id, now))?))
}

fn issue_many(
    py: Python<'_>,
    key: &SigningKey,
    rx_ids: &Bound<'_, PyAny>,
    now: Option<i64>,
) -> PyResult<Vec<PyToken>> {
    let mut ids = Vec::new();
    for (i, o) in rx_ids.try_iter()?.enumerate() {
        let o = o?;
        let text = str_arg(&o, &format!("rx_ids[{i}]"))?;
        ids.push(RxId::parse(text).map_err(|e| InvalidId::new_err(format!("rx_ids[{i}]: {e}")))?);
    }
    let tokens = py.detach(|| {
        let now = now.unwrap_or_else(|| unix_now_ms() as i64);
        key.issue_many_at(&ids, now)
    })?;
    Ok(tokens.into_iter().map(PyToken).collect())
}

#[pyfunction]
fn issue_tokens(
    py: Python<'_>,
    key: PyRef<'_, PySigningKey>,
    rx_ids: &Bound<'_, PyAny>,
) -> PyResult<Vec<PyToken>> {
    issue_many(py, &key.0, rx_ids, None)
}

#[pyfunction]
fn issue_tokens_at(
    py: Python<'_>,
    key: PyRef<'_, PySigningKey>,
    rx_ids: &Bound<'_, PyAny>,
    now: &Bound<'_, PyAny>,
) -> PyResult<Vec<PyToken>> {
    let now = now_arg(now)?;
    issue_many(py, &key.0, rx_ids, Some(now))
}

fn verify(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    ring: &PyKeyRing,
    now: i64,
) -> PyResult<PyToken> {
    let text = str_arg(text, "token")?;
    Ok(PyToken(py.detach(|| ring.read().verify_at(text, now))?))
}

/// `verify_token` against one key ring, remembering the texts it accepted (see
/// [`TokenCache`]): a text accepted before is accepted again without its signature check,
/// after the checks that can change (kid still active, age). Nothing remembered is a Python
/// object, so the cyclic garbage collector never walks it.
#[pyclass(name = "TokenCache", module = "ordonum._core", frozen)]
pub struct PyTokenCache {
    keyring: Py<PyKeyRing>,
    cache: Mutex<TokenCache>,
}

impl PyTokenCache {
    // Every update is one insertion or removal: a poisoned lock leaves nothing half-done.
    fn lock(&self) -> MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn verify_at(&self, py: Python<'_>, text: &Bound<'_, PyAny>, now: i64) -> PyResult<PyToken> {
        let text = str_arg(text, "token")?;
        let ring = self.keyring.get();
        // Memory first (a hash lookup: the interpreter stays attached). Locks are taken in
        // one order, the cache's then the ring's, and neither is held while waiting for the
        // interpreter: attached or not, nothing can deadlock. (The same steps as
        // `TokenCache::verify_at`, but with the cache unlocked during the full check.)
        if let Some(t) = self.lock().lookup(&ring.read(), text, now) {
            return Ok(PyToken(t));
        }
        let token = py.detach(|| ring.read().verify_at(text, now))?;
        self.lock().remember(&ring.read(), text, &token);
        Ok(PyToken(token))
    }
}

#[pymethods]
impl PyTokenCache {
    #[new]
    #[pyo3(signature = (keyring, size = 100_000))]
    fn py_new(keyring: Py<PyKeyRing>, size: usize) -> PyResult<Self> {
        Ok(PyTokenCache { keyring, cache: Mutex::new(TokenCache::new(size)?) })
    }

    /// The token of `text` if `keyring` accepts it now.
    fn verify(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<PyToken> {
        self.verify_at(py, text, unix_now_ms() as i64)
    }

    /// The token of `text` if `keyring` accepts it at `now` (an aware datetime).
    #[pyo3(name = "verify_at")]
    fn py_verify_at(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        now: &Bound<'_, PyAny>,
    ) -> PyResult<PyToken> {
        let now = now_arg(now)?;
        self.verify_at(py, text, now)
    }

    #[getter]
    fn keyring(&self, py: Python<'_>) -> Py<PyKeyRing> {
        self.keyring.clone_ref(py)
    }

    #[getter]
    fn size(&self) -> usize {
        self.lock().size()
    }

    /// Texts accepted from memory, without a signature check.
    #[getter]
    fn hits(&self) -> u64 {
        self.lock().hits()
    }

    /// Texts accepted after a full check (each then remembered, unless another thread
    /// remembered it first or its kid was revoked meanwhile).
    #[getter]
    fn checks(&self) -> u64 {
        self.lock().checks()
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    fn __repr__(&self) -> String {
        let c = self.lock();
        format!(
            "TokenCache(size={}, len={}, hits={}, checks={})",
            c.size(),
            c.len(),
            c.hits(),
            c.checks()
        )
    }
}

#[pyfunction]
fn verify_token(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    keyring: PyRef<'_, PyKeyRing>,
) -> PyResult<PyToken> {
    verify(py, text, &keyring, unix_now_ms() as i64)
}

#[pyfunction]
fn verify_token_at(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    keyring: PyRef<'_, PyKeyRing>,
    now: &Bound<'_, PyAny>,
) -> PyResult<PyToken> {
    verify(py, text, &keyring, now_arg(now)?)
}

fn verify_many<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    ring: &PyKeyRing,
    now: Option<i64>,
) -> PyResult<Bound<'py, PyList>> {
    let mut owned: Vec<String> = Vec::new();
    for t in texts.try_iter()? {
        owned.push(str_arg(&t?, "token")?.to_owned());
    }
    let results = py.detach(|| {
        let now = now.unwrap_or_else(|| unix_now_ms() as i64);
        ring.read().verify_many_at(&owned, now)
    });
    let out = PyList::empty(py);
    for r in results {
        match r {
            Ok(t) => out.append(Bound::new(py, PyToken(t))?)?,
            Err(_) => out.append(py.None())?,
        }
    }
    Ok(out)
}

#[pyfunction]
fn verify_tokens<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    keyring: PyRef<'py, PyKeyRing>,
) -> PyResult<Bound<'py, PyList>> {
    verify_many(py, texts, &keyring, None)
}

#[pyfunction]
fn verify_tokens_at<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    keyring: PyRef<'py, PyKeyRing>,
    now: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let now = now_arg(now)?;
    verify_many(py, texts, &keyring, Some(now))
}

fn diagnose(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    ring: &PyKeyRing,
    now: i64,
) -> PyResult<String> {
    let text = str_arg(text, "token")?;
    Ok(py.detach(|| match ring.read().verify_at(text, now) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }))
}

#[pyfunction]
fn diagnose_token(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    keyring: PyRef<'_, PyKeyRing>,
) -> PyResult<String> {
    diagnose(py, text, &keyring, unix_now_ms() as i64)
}

#[pyfunction]
fn diagnose_token_at(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    keyring: PyRef<'_, PyKeyRing>,
    now: &Bound<'_, PyAny>,
) -> PyResult<String> {
    diagnose(py, text, &keyring, now_arg(now)?)
}

#[pyfunction]
fn parse_access_code(text: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(AccessCode::parse(str_arg(text, "access code")?)?.text())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySigningKey>()?;
    m.add_class::<PyVerifyingKey>()?;
    m.add_class::<PyKeyRing>()?;
    m.add_class::<PyToken>()?;
    m.add_class::<PyTokenCache>()?;
    m.add_function(wrap_pyfunction!(issue_token, m)?)?;
    m.add_function(wrap_pyfunction!(issue_token_at, m)?)?;
    m.add_function(wrap_pyfunction!(issue_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(issue_tokens_at, m)?)?;
    m.add_function(wrap_pyfunction!(verify_token, m)?)?;
    m.add_function(wrap_pyfunction!(verify_token_at, m)?)?;
    m.add_function(wrap_pyfunction!(verify_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(verify_tokens_at, m)?)?;
    m.add_function(wrap_pyfunction!(diagnose_token, m)?)?;
    m.add_function(wrap_pyfunction!(diagnose_token_at, m)?)?;
    m.add_function(wrap_pyfunction!(parse_access_code, m)?)?;
    m.add("TOKEN_TEXT_LEN", token::TEXT_LEN)?;
    Ok(())
}
