//! ordonum: the core of the French e-prescription flow ("ordonnance numérique").
//!
//! One module per concept; none of them knows about Python. The PyO3 bindings
//! live in `python/` behind the `python` cargo feature, so `cargo test` runs
//! without an interpreter.

pub mod access;
pub mod id;

pub mod check;

// token: pub mod token;

// qr: pub mod qr;

// store: pub mod store;

#[cfg(feature = "python")]
mod python;
