//! The Python exceptions of the public API, defined here once. Each binding module maps
//! its core error type to them with a `From` impl next to its bindings.

use pyo3::exceptions::{PyException, PyLookupError, PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::id::IdError;

pyo3::create_exception!(
    ordonum,
    InvalidId,
    PyValueError,
    "Text that is not a valid prescription ID (the message says what is wrong and where)."
);
pyo3::create_exception!(
    ordonum,
    InvalidIdentifier,
    PyValueError,
    "A health identifier (NIR, RPPS, FINESS, CIP13, ...) that fails its format or check key."
);
pyo3::create_exception!(
    ordonum,
    InvalidToken,
    PyValueError,
    "A QR token that does not verify. Deliberately opaque: the reason is for diagnose_token."
);
pyo3::create_exception!(ordonum, NotFound, PyLookupError, "No such prescription.");
pyo3::create_exception!(
    ordonum,
    Conflict,
    PyException,
    "The prescription's state forbids the operation (over-dispensing, cancelled, expired, ...)."
);
pyo3::create_exception!(
    ordonum,
    InvalidRecord,
    PyValueError,
    "A record given to the store is malformed; the message names the field at fault."
);
pyo3::create_exception!(
    ordonum,
    StoreFailed,
    PyOSError,
    "The store's journal hit an I/O or fsync error; the store refuses writes from then on."
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
    m.add("InvalidIdentifier", py.get_type::<InvalidIdentifier>())?;
    m.add("InvalidToken", py.get_type::<InvalidToken>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("InvalidRecord", py.get_type::<InvalidRecord>())?;
    m.add("StoreFailed", py.get_type::<StoreFailed>())?;
    Ok(())
}
