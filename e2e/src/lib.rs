//! End-to-end environment and test helpers.
pub mod cli;
