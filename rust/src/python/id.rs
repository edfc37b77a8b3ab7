//! Bindings for [`crate::id`]: `IdGenerator`, `RxId`, `parse_id`, `is_valid_id`, `validate_ids`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyList, PyString, PyTzInfo};

use crate::id::{self, IdGenerator, RxId};

/// Reads a `str` argument, raising `TypeError` (not `InvalidId`) for other types.
pub(crate) fn str_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?),
        Err(_) => {
            Err(PyTypeError::new_err(format!("{what} must be str, not {}", obj.get_type().name()?)))
        }
    }
}

/// Parses an ID argument given as `str`.
pub(crate) fn id_arg(obj: &Bound<'_, PyAny>) -> PyResult<RxId> {
    Ok(RxId::parse(str_arg(obj, "ID")?)?)
}

pub(crate) fn ascii<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // The ID encoders only produce ASCII.
    PyString::new(py, std::str::from_utf8(b).unwrap_or_default())
}

/// A `str` from ASCII bytes, made as a compact ASCII string and filled in place: no UTF-8
/// decoding pass (`PyString::new`'s). Worth it where millions are made (`new_batch`).
fn ascii_fast<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if !b.is_ascii() {
        return Ok(ascii(py, b));
    }
    let len = pyo3::ffi::Py_ssize_t::try_from(b.len())?;
    // SAFETY: PyUnicode_New(len, 127) returns a new compact ASCII string with room for `len`
    // one-byte characters (or NULL with an exception set, which from_owned_ptr_or_err turns
    // into Err); the bytes are ASCII, as the kind requires, and are written before the
    // string is shared.
    unsafe {
        let obj = pyo3::ffi::PyUnicode_New(len, 127);
        let s = Bound::from_owned_ptr_or_err(py, obj)?;
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            pyo3::ffi::PyUnicode_DATA(obj).cast::<u8>(),
            b.len(),
        );
        Ok(s.cast_into_unchecked())
    }
}

/// Largest `new_batch`: bounds the memory one call can ask for (16 Mi IDs, about 1.5 GB).
const MAX_BATCH: usize = 1 << 24;

#[pyclass(name = "IdGenerator", module = "ordonum._core", frozen)]
pub struct PyIdGenerator(IdGenerator);

#[pymethods]
impl PyIdGenerator {
    #[new]
    fn py_new(node: u64) -> PyResult<Self> {
        Ok(PyIdGenerator(IdGenerator::new(node)?))
    }

    #[getter]
    fn node(&self) -> u32 {
        self.0.node()
    }

    #[pyo3(name = "new")]
    fn py_next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        ascii_fast(py, &self.0.next_id()?.text_bytes())
    }

    fn new_batch<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyList>> {
        if n > MAX_BATCH {
            return Err(PyValueError::new_err(format!(
                "new_batch makes at most {MAX_BATCH} IDs per call, got {n}"
            )));
        }
        // Reserve and encode without the GIL (a million IDs take milliseconds), then make
        // the strings.
        let make = || -> Result<Vec<[u8; id::TEXT_LEN]>, id::IdError> {
            let mut texts = Vec::with_capacity(n);
            self.0.batch_text(n, |t| texts.push(*t))?;
            Ok(texts)
        };
        let texts = if n < 256 { make()? } else { py.detach(make)? };
        let strs = texts.iter().map(|t| ascii_fast(py, t)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, strs)
    }

    fn __repr__(&self) -> String {
        format!("IdGenerator(node={})", self.0.node())
    }
}

#[pyclass(name = "RxId", module = "ordonum._core", frozen, eq, ord, hash)]
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyRxId(pub RxId);

#[pymethods]
impl PyRxId {
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        ascii(py, &self.0.text_bytes())
    }

    #[getter]
    fn compact<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        ascii(py, &self.0.compact_bytes())
    }

    #[getter]
    fn node(&self) -> u32 {
        self.0.node()
    }

    #[getter]
    fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    #[getter]
    fn sequence(&self) -> u16 {
        self.0.sequence()
    }

    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDateTime>> {
        let ms = self.0.unix_ms();
        let utc = PyTzInfo::utc(py)?;
        let epoch = PyDateTime::new(py, 1970, 1, 1, 0, 0, 0, 0, Some(&utc))?;
        let delta = pyo3::types::PyDelta::new(
            py,
            (ms / 86_400_000) as i32,
            ((ms % 86_400_000) / 1000) as i32,
            ((ms % 1000) * 1000) as i32,
            false,
        )?;
        Ok(epoch.add(delta)?.cast_into::<PyDateTime>()?)
    }

    #[getter]
    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn __str__<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.text(py)
    }

    fn __repr__(&self) -> String {
        format!("RxId('{}')", self.0.text())
    }
}

#[pyfunction]
fn parse_id(text: &Bound<'_, PyAny>) -> PyResult<PyRxId> {
    Ok(PyRxId(id_arg(text)?))
}

#[pyfunction]
fn is_valid_id(text: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(RxId::is_valid(str_arg(text, "ID")?))
}

#[pyfunction]
fn validate_ids(py: Python<'_>, texts: Vec<String>) -> Vec<bool> {
    if texts.len() < 64 {
        return texts.iter().map(|t| RxId::is_valid(t)).collect();
    }
    py.detach(|| texts.iter().map(|t| RxId::is_valid(t)).collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIdGenerator>()?;
    m.add_class::<PyRxId>()?;
    m.add_function(wrap_pyfunction!(parse_id, m)?)?;
    m.add_function(wrap_pyfunction!(is_valid_id, m)?)?;
    m.add_function(wrap_pyfunction!(validate_ids, m)?)?;
    m.add("ID_EPOCH_UNIX_MS", id::EPOCH_UNIX_MS)?;
    m.add("MAX_NODE", id::MAX_NODE)?;
    Ok(())
}
