#![cfg(feature = "axum")]
//! Placeholder: filled in by the axum work.

mod support;
