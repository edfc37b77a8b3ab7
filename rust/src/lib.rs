//! ordonum: the core of the French e-prescription flow ("ordonnance numérique").
//!
//! One module per concept; none of them knows about Python. The PyO3 bindings
//! live in `python/` behind the `python` cargo feature, so `cargo test` runs
//! without an interpreter.

pub mod access;
pub mod id;

pub mod check;

pub mod base45;
pub mod token;

pub mod qr;

pub mod store;

#[cfg(feature = "python")]
mod python;
