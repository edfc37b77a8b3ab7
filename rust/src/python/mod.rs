//! The `ordonum._core` extension module. Everything PyO3 lives under this folder; the
//! core modules return `Result<T, CoreError>` and the `From` impls in [`errors`] turn
//! those errors into the Python exceptions of the public API.

use pyo3::prelude::*;

mod errors;
mod id;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    id::register(m)?;
    Ok(())
}
