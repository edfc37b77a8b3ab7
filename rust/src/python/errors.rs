//! The Python exceptions of the public API, and the mapping from core errors to them.
//! Every exception class is defined here, once; binding modules add their `From` impls.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::id::IdError;

pyo3::create_exception!(
    ordonum,
    InvalidId,
    PyValueError,
    "Text that is not a valid prescription ID (the message says what is wrong and where)."
);

impl From<IdError> for PyErr {
    fn from(e: IdError) -> PyErr {
        match e {
            // Caller-side misuse of a generator, not a bad ID text.
            IdError::Node(_) | IdError::Exhausted => PyValueError::new_err(e.to_string()),
            _ => InvalidId::new_err(e.to_string()),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InvalidId", py.get_type::<InvalidId>())?;
    Ok(())
}
