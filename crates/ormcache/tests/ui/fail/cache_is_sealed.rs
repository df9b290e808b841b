//! `Cache` is sealed: only ormcache's own caches implement it.

#[derive(Clone)]
struct MyCache;

impl ormcache::Cache for MyCache {}

fn main() {}
