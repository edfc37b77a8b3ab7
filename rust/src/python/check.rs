//! Bindings for [`crate::check`]: the check-character primitives and the identifier
//! validators, re-exported by `ordonum.checks`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::errors::InvalidIdentifier;
use crate::check::{self, CheckError, Kind};

impl From<CheckError> for PyErr {
    fn from(e: CheckError) -> PyErr {
        InvalidIdentifier::new_err(e.to_string())
    }
}

/// The text of a `str` argument; `None` for a `str` that is not valid Unicode (a lone
/// surrogate), which no identifier contains. `TypeError` for other types.
fn text_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<&'a str>> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str().ok()),
        Err(_) => {
            Err(PyTypeError::new_err(format!("{what} must be str, not {}", obj.get_type().name()?)))
        }
    }
}

fn surrogate(what: &'static str) -> PyErr {
    InvalidIdentifier::new_err(format!("{what} is not valid Unicode text (lone surrogate)"))
}

/// Copies a list of `str` into one buffer (so the GIL can be released while they are checked)
/// and returns `f` of each.
fn batch(
    py: Python<'_>,
    texts: &Bound<'_, PyList>,
    what: &str,
    f: fn(&str) -> bool,
) -> PyResult<Vec<bool>> {
    let n = texts.len();
    let mut buf = String::with_capacity(n * 16);
    let mut spans: Vec<Option<(usize, usize)>> = Vec::with_capacity(n);
    for (i, item) in texts.iter().enumerate() {
        let s = match item.cast::<PyString>() {
            Ok(s) => s,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "texts[{i}] must be str ({what}), not {}",
                    item.get_type().name()?
                )))
            }
        };
        spans.push(s.to_str().ok().map(|t| {
            let start = buf.len();
            buf.push_str(t);
            (start, buf.len())
        }));
    }
    let run = || -> Vec<bool> {
        spans.iter().map(|sp| sp.and_then(|(a, b)| buf.get(a..b)).is_some_and(f)).collect()
    };
    Ok(if n < 64 { run() } else { py.detach(run) })
}

macro_rules! primitive {
    ($name:ident, $valid:ident, $core:path, $core_valid:path, $pyname:literal, $pyvalid:literal) => {
        #[pyfunction]
        #[pyo3(name = $pyname)]
        fn $name(body: &Bound<'_, PyAny>) -> PyResult<String> {
            let what = concat!($pyname, " body");
            let body = text_arg(body, "body")?.ok_or_else(|| surrogate(what))?;
            Ok($core(body)?.to_string())
        }

        #[pyfunction]
        #[pyo3(name = $pyvalid)]
        fn $valid(number: &Bound<'_, PyAny>) -> PyResult<bool> {
            Ok(text_arg(number, "number")?.is_some_and($core_valid))
        }
    };
}

primitive!(
    py_mod11_2,
    py_is_valid_mod11_2,
    check::mod11_2_check,
    check::is_valid_mod11_2,
    "mod11_2",
    "is_valid_mod11_2"
);
primitive!(
    py_mod37_2,
    py_is_valid_mod37_2,
    check::mod37_2_check,
    check::is_valid_mod37_2,
    "mod37_2",
    "is_valid_mod37_2"
);
primitive!(
    py_mod97_10,
    py_is_valid_mod97_10,
    check::mod97_10_check,
    check::is_valid_mod97_10,
    "mod97_10",
    "is_valid_mod97_10"
);
primitive!(
    py_mod37_36,
    py_is_valid_mod37_36,
    check::mod37_36_check,
    check::is_valid_mod37_36,
    "mod37_36",
    "is_valid_mod37_36"
);
primitive!(
    py_luhn,
    py_is_valid_luhn,
    check::luhn_check,
    check::is_valid_luhn,
    "luhn",
    "is_valid_luhn"
);
primitive!(
    py_ean13,
    py_is_valid_ean13,
    check::ean13_check,
    check::is_valid_ean13,
    "ean13",
    "is_valid_ean13"
);

macro_rules! validator {
    ($kind:expr, $what:literal, $valid:ident, $validate:ident, $many:ident,
     $pyvalid:literal, $pyvalidate:literal, $pymany:literal) => {
        #[pyfunction]
        #[pyo3(name = $pyvalid)]
        fn $valid(text: &Bound<'_, PyAny>) -> PyResult<bool> {
            Ok(text_arg(text, $what)?.is_some_and(|t| check::is_valid($kind, t)))
        }

        #[pyfunction]
        #[pyo3(name = $pyvalidate)]
        fn $validate(text: &Bound<'_, PyAny>) -> PyResult<String> {
            let t = text_arg(text, $what)?.ok_or_else(|| surrogate($what))?;
            Ok(check::compact($kind, t)?)
        }

        #[pyfunction]
        #[pyo3(name = $pymany)]
        fn $many(py: Python<'_>, texts: &Bound<'_, PyList>) -> PyResult<Vec<bool>> {
            batch(py, texts, $what, |t| check::is_valid($kind, t))
        }
    };
}

validator!(
    Kind::Nir,
    "NIR",
    py_is_valid_nir,
    py_validate_nir,
    py_are_valid_nir,
    "is_valid_nir",
    "validate_nir",
    "are_valid_nir"
);
validator!(
    Kind::Rpps,
    "RPPS number",
    py_is_valid_rpps,
    py_validate_rpps,
    py_are_valid_rpps,
    "is_valid_rpps",
    "validate_rpps",
    "are_valid_rpps"
);
validator!(
    Kind::Finess,
    "FINESS number",
    py_is_valid_finess,
    py_validate_finess,
    py_are_valid_finess,
    "is_valid_finess",
    "validate_finess",
    "are_valid_finess"
);
validator!(
    Kind::Cip13,
    "CIP13",
    py_is_valid_cip13,
    py_validate_cip13,
    py_are_valid_cip13,
    "is_valid_cip13",
    "validate_cip13",
    "are_valid_cip13"
);
validator!(
    Kind::ErezeptId,
    "E-Rezept ID",
    py_is_valid_erezept_id,
    py_validate_erezept_id,
    py_are_valid_erezept_id,
    "is_valid_erezept_id",
    "validate_erezept_id",
    "are_valid_erezept_id"
);
validator!(
    Kind::EpsId,
    "EPS prescription ID",
    py_is_valid_eps_id,
    py_validate_eps_id,
    py_are_valid_eps_id,
    "is_valid_eps_id",
    "validate_eps_id",
    "are_valid_eps_id"
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for f in [
        wrap_pyfunction!(py_mod11_2, m)?,
        wrap_pyfunction!(py_is_valid_mod11_2, m)?,
        wrap_pyfunction!(py_mod37_2, m)?,
        wrap_pyfunction!(py_is_valid_mod37_2, m)?,
        wrap_pyfunction!(py_mod97_10, m)?,
        wrap_pyfunction!(py_is_valid_mod97_10, m)?,
        wrap_pyfunction!(py_mod37_36, m)?,
        wrap_pyfunction!(py_is_valid_mod37_36, m)?,
        wrap_pyfunction!(py_luhn, m)?,
        wrap_pyfunction!(py_is_valid_luhn, m)?,
        wrap_pyfunction!(py_ean13, m)?,
        wrap_pyfunction!(py_is_valid_ean13, m)?,
        wrap_pyfunction!(py_is_valid_nir, m)?,
        wrap_pyfunction!(py_validate_nir, m)?,
        wrap_pyfunction!(py_are_valid_nir, m)?,
        wrap_pyfunction!(py_is_valid_rpps, m)?,
        wrap_pyfunction!(py_validate_rpps, m)?,
        wrap_pyfunction!(py_are_valid_rpps, m)?,
        wrap_pyfunction!(py_is_valid_finess, m)?,
        wrap_pyfunction!(py_validate_finess, m)?,
        wrap_pyfunction!(py_are_valid_finess, m)?,
        wrap_pyfunction!(py_is_valid_cip13, m)?,
        wrap_pyfunction!(py_validate_cip13, m)?,
        wrap_pyfunction!(py_are_valid_cip13, m)?,
        wrap_pyfunction!(py_is_valid_erezept_id, m)?,
        wrap_pyfunction!(py_validate_erezept_id, m)?,
        wrap_pyfunction!(py_are_valid_erezept_id, m)?,
        wrap_pyfunction!(py_is_valid_eps_id, m)?,
        wrap_pyfunction!(py_validate_eps_id, m)?,
        wrap_pyfunction!(py_are_valid_eps_id, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add("CIP13_PREFIX", check::CIP13_PREFIX)?;
    Ok(())
}
