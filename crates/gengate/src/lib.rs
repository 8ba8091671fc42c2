//! The gengate binary's pieces, as a library so tests can start a real
//! server in-process.

pub mod app;
pub mod config;
