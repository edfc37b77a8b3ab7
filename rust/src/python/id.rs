//! Bindings for [`crate::id`]: `IdGenerator`, `RxId`, `parse_id`, `is_valid_id`, `validate_ids`.

use pyo3::exceptions::PyTypeError;
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
        Ok(ascii(py, &self.0.next_id()?.text_bytes()))
    }

    fn new_batch<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyList>> {
        let mut texts = Vec::with_capacity(n);
        self.0.batch(n, |id| texts.push(id.text_bytes()))?;
        PyList::new(py, texts.iter().map(|t| ascii(py, t)))
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
