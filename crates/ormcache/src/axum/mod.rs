//! axum integration (feature `axum`). Inside this module, the axum crate is `::axum`.
