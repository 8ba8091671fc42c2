//! Client-facing API shapes. Each dialect parses its requests into a
//! [`crate::NewTask`] and renders a [`crate::Task`] in its own shape; none
//! reaches into another.

pub mod kling;
pub mod luma;
pub mod tasks;
