#![cfg(feature = "cluster")]
//! Placeholder: filled in by the cluster work.

mod support;
