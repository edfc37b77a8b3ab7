//! The `ordonum._core` extension module. Everything PyO3 lives under this folder; the
//! core modules return their own error types and the `From` impls next to each binding
//! turn those into the Python exceptions defined once in [`errors`].

use pyo3::prelude::*;

mod errors;
mod id;

mod check;

mod token;

mod qr;

mod store;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    id::register(m)?;

    check::register(m)?;

    token::register(m)?;

    qr::register(m)?;

    store::register(m)?;

    Ok(())
}
