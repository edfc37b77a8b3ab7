//! Bindings for [`crate::qr`]: `QrMatrix`, `qr_matrix`, `qr_svg`, `qr_png` (wrapped, typed,
//! by the pure-Python `ordonum.qr`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList};

use super::id::str_arg;
use crate::qr::{self, Ecc, QrError, QrMatrix};

impl From<QrError> for PyErr {
    fn from(e: QrError) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

#[pyclass(name = "QrMatrix", module = "ordonum._core", frozen)]
pub struct PyQrMatrix(QrMatrix);

#[pymethods]
impl PyQrMatrix {
    #[getter]
    fn version(&self) -> u8 {
        self.0.version
    }

    #[getter]
    fn size(&self) -> usize {
        self.0.size
    }

    #[getter]
    fn ecc(&self) -> String {
        self.0.ecc.letter().to_string()
    }

    #[getter]
    fn mask(&self) -> u8 {
        self.0.mask
    }

    /// Rows of booleans, dark = True.
    #[getter]
    fn modules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let n = self.0.size;
        let rows = PyList::empty(py);
        for row in self.0.modules.chunks_exact(n) {
            rows.append(PyList::new(py, row.iter().map(|&d| PyBool::new(py, d)))?)?;
        }
        Ok(rows)
    }

    fn __repr__(&self) -> String {
        format!(
            "QrMatrix(version={}, size={}, ecc='{}')",
            self.0.version,
            self.0.size,
            self.0.ecc.letter()
        )
    }
}

fn encode(py: Python<'_>, text: &Bound<'_, PyAny>, ecc: &str) -> PyResult<QrMatrix> {
    let text = str_arg(text, "text")?;
    let ecc = Ecc::parse(ecc)?;
    Ok(py.detach(|| qr::encode(text, ecc))?)
}

#[pyfunction]
#[pyo3(signature = (text, ecc = "M"))]
fn qr_matrix(py: Python<'_>, text: &Bound<'_, PyAny>, ecc: &str) -> PyResult<PyQrMatrix> {
    Ok(PyQrMatrix(encode(py, text, ecc)?))
}

#[pyfunction]
#[pyo3(signature = (text, scale, border, ecc = "M"))]
fn qr_svg(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    scale: u32,
    border: u32,
    ecc: &str,
) -> PyResult<String> {
    let text = str_arg(text, "text")?;
    let ecc = Ecc::parse(ecc)?;
    Ok(py.detach(|| qr::encode(text, ecc)?.svg(scale, border))?)
}

#[pyfunction]
#[pyo3(signature = (text, scale, border, ecc = "M"))]
fn qr_png<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyAny>,
    scale: u32,
    border: u32,
    ecc: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let text = str_arg(text, "text")?;
    let ecc = Ecc::parse(ecc)?;
    let png = py.detach(|| qr::encode(text, ecc)?.png(scale, border))?;
    Ok(PyBytes::new(py, &png))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyQrMatrix>()?;
    m.add_function(wrap_pyfunction!(qr_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(qr_svg, m)?)?;
    m.add_function(wrap_pyfunction!(qr_png, m)?)?;
    Ok(())
}
