//! The demo service: the seed's FastAPI integration example, in axum and SeaORM.

fn main() {}
