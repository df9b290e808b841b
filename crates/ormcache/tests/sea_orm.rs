#![cfg(feature = "sea-orm")]
//! Placeholder: filled in by the sea_orm work.

mod support;
