//! The `#[cached]` attribute of [ormcache](https://docs.rs/ormcache). Use it as
//! `ormcache::cached` (the default `macros` feature of `ormcache`); this crate is an
//! implementation detail and its expansion calls `ormcache`'s hidden `__private`
//! module.
//!
//! Layout: `attr` parses the options, `expand` writes the code, this file holds the
//! documentation and the entry point.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Caches the result of an `async fn` in an `ormcache` cache: the first call with
/// given arguments runs the body and stores its value; later calls (in this process
/// or, with a Redis-backed cache, in any process) get the stored value until it
/// expires or is invalidated. Concurrent calls with the same arguments run the body
/// once and share its value.
///
/// ```
/// use std::sync::LazyLock;
/// use std::time::Duration;
/// use ormcache::{QueryCache, cached};
///
/// static CACHE: LazyLock<QueryCache> =
///     LazyLock::new(|| QueryCache::new(10_000, Duration::from_secs(300)).unwrap());
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// /// Loads a user (the body stands for a database query).
/// #[cached(cache = CACHE, ttl = 60)]
/// async fn get_user(id: u64) -> Option<User> {
///     Some(User { id, name: format!("user #{id}") })
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let user = get_user(1).await.unwrap();           // runs the body
/// assert_eq!(get_user(1).await.unwrap().name, user.name); // from the cache
///
/// // Companions generated next to the function:
/// let key = get_user_cache_key(&1).unwrap();       // the key `get_user(1)` uses
/// assert!(key.contains("::get_user:"));
/// assert!(get_user_invalidate(1).await.unwrap());  // drops that entry
/// # });
/// ```
///
/// # Options
///
/// Options are Rust expressions and literals, never strings of code.
///
/// | option | meaning |
/// | --- | --- |
/// | `cache = <expr>` | **Required.** The cache: any `ormcache::Cache` (`QueryCache`, `DistributedCache`, `HybridCache`, `AnyCache`), or something that derefs to one (a `LazyLock`, an `Arc`, a reference). Evaluated on every call, after the arguments are bound, so it may use them or `self`: `cache = self.cache`, `cache = state.cache()`. The handle is cloned (cheap: an `Arc`). |
/// | `ttl = <expr>` | Lifetime of the stored value: integer seconds (`ttl = 60`) or a `Duration` (`ttl = Duration::from_millis(500)`). Default: the cache's default TTL. |
/// | `key_prefix = "..."` | Prepended to the key, with `:`. |
/// | `key = <expr>` | The key, computed from the arguments: anything `Display`, e.g. `key = format!("user:{id}")`. The expression sees the arguments **by reference** (as in the `_cache_key` companion, so both compute the same key). |
/// | `skip(a, b)` / `skip_all` | Leave these arguments (or all) out of the default key, e.g. database connections. As in `tracing`'s `#[instrument]`. |
/// | `tags = ["users", ...]` | Tags of the stored value, for `Cache::invalidate_tag`. String literals or any `Display` expressions (which may use the arguments). |
/// | `lock` | Cluster-wide single flight through a Redis lock (`ComputeOptions::lock`): one process runs the body, the others wait for its value. |
/// | `early_refresh` / `early_refresh = 0.1` | Refresh a hit in the last 20 % (or the given fraction) of its TTL, in one caller, while the others keep getting the current value (`ComputeOptions::refresh_ahead`). |
/// | `cache_none = true` | For `Option<T>` returns: cache `None` too ("not found" is cached). Without it, a `None` is returned and not stored. |
/// | `none_ttl = <expr>` | With `cache_none = true`: a shorter lifetime for a cached `None`. |
///
/// # The key
///
/// Without `key`, the key is `{key_prefix}:{path}:{hash}` (no prefix part without
/// `key_prefix`), where
///
/// - `path` is `module_path!()::fn_name` for free functions (and associated
///   functions without `self`), and `{type}::fn_name` for methods with a `self`
///   receiver, `type` being `std::any::type_name::<Self>()` — so that methods of the
///   same name on different types never share entries;
/// - `hash` is 32 hex digits of XXH3-128 over the MessagePack encoding of the
///   arguments that are not skipped, as a tuple in order (`self` is never part of
///   it). Arguments must implement `serde::Serialize`; if they fail to serialize at
///   run time, the call runs uncached.
///
/// The key of a free function is the same in every process, build and platform, so
/// processes of one service share entries through Redis. It changes when the
/// function moves to another module or is renamed, or its arguments change type or
/// encoding. For methods the key also depends on the type's path as `type_name`
/// spells it, which Rust does not promise to keep across compiler versions (a new
/// compiler can mean a cold cache, never wrong entries). Use `key = ...` for a key
/// under your control, e.g. one shared with other services.
///
/// Keys name entries within the cache: a `DistributedCache` stores them under its
/// own `key_prefix` as well.
///
/// # Return types
///
/// The return type, as written, picks how results are cached:
///
/// - `Result<T, E>` (any path whose last segment is `Result`, e.g. `anyhow::Result<T>`,
///   `io::Result<T>`): `Ok` values are cached, an `Err` is returned and never cached.
///   Callers that waited on the same load each get a clone of the error, so `E` must
///   be `Clone + Send + Sync + 'static`.
/// - `Option<T>` (last segment `Option`): `Some` is cached; `None` only with
///   `cache_none = true`.
/// - anything else is cached as it is.
///
/// The cached type (`T`) must be `ormcache::CacheValue` (serde `Serialize +
/// DeserializeOwned`, `Send + Sync + 'static`) and `Clone`. Type aliases are not seen
/// through: `type Lookup = Option<User>; -> Lookup` is cached as a plain value (its
/// `None` included). Write the `Result`/`Option` out to get their behaviour.
///
/// A cache failure never fails the call: if Redis is down the body runs and its
/// value is returned; if the key or TTL is invalid the call runs uncached (and a
/// warning is logged).
///
/// # The body
///
/// The body runs inside the loader, an `async move` block that owns the arguments;
/// `return` and `?` work as in the original function. Its future must be `Send`
/// (the cache may hand the load to whichever caller drives it). Arguments may be
/// references (`db: &DatabaseConnection`): the loader does not need to be `'static`.
///
/// # Companions
///
/// Next to `fn name` (as methods in the same `impl` block for methods) the macro
/// generates, with the function's visibility:
///
/// - `fn name_cache_key(<key arguments by reference>) -> Option<String>`: the key a
///   call with these arguments uses (`None`: the call runs uncached). With the
///   default key its parameters are the arguments that are not skipped; with
///   `key = ...` all arguments. Methods take `&self`.
/// - `async fn name_invalidate(<all arguments>) -> ormcache::Result<bool>`: deletes
///   that key from the `cache` (whether it existed). It takes every argument, skipped
///   ones included, because the `cache` expression may use them. Methods take
///   `&self`.
///
/// ```
/// # use std::time::Duration;
/// use ormcache::{Cache, QueryCache, cached};
///
/// # #[derive(Debug)] struct Db;
/// #[derive(Clone)]
/// struct Users {
///     cache: QueryCache,
/// }
///
/// impl Users {
///     /// A user's display name.
///     #[cached(cache = self.cache, ttl = Duration::from_secs(30), skip(db), tags = ["users"])]
///     async fn name(&self, db: &Db, id: u64) -> Result<String, String> {
///         if id == 0 {
///             return Err("no user 0".to_string()); // not cached
///         }
///         Ok(format!("user #{id}"))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let users = Users { cache: QueryCache::new(100, Duration::from_secs(60)).unwrap() };
/// assert_eq!(users.name(&Db, 7).await, Ok("user #7".to_string()));
/// assert_eq!(users.name(&Db, 0).await, Err("no user 0".to_string()));
/// let key = users.name_cache_key(&7).unwrap();
/// assert!(Cache::exists(&users.cache, &key).await.unwrap());
/// Cache::invalidate_tag(&users.cache, "users").await.unwrap();
/// assert!(!users.name_invalidate(&Db, 7).await.unwrap()); // already gone
/// # });
/// ```
///
/// # Limitations
///
/// - Every argument must be bound to a name (`name: Type`, `mut name: Type`), not a
///   destructuring pattern; at most 16 arguments are hashed.
/// - Inside a trait `impl` the companions are not trait members, so they do not
///   compile there: put the cached function in an inherent `impl` (or a free
///   function) and call it from the trait method.
/// - A method's `_cache_key` and `_invalidate` take `&self` whatever the method's
///   receiver is.
///
/// # Errors at compile time
///
/// Misuse is reported at the offending token: a function that is not `async`, an
/// unknown or duplicate option, a missing `cache`, skipping a parameter that does
/// not exist, `key` together with `skip`/`skip_all`, `none_ttl` without
/// `cache_none = true`, `cache_none` on a function that does not return `Option`,
/// and a cached type that is not serializable (at that type in the signature).
///
/// ```compile_fail
/// # use ormcache::{QueryCache, cached};
/// # fn cache() -> QueryCache { unimplemented!() }
/// #[cached(cache = cache(), skip(id), key = format!("user:{id}"))] // `key` with `skip`
/// async fn get_user(id: u64) -> String {
///     format!("user #{id}")
/// }
/// ```
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let result = syn::parse::<attr::Args>(attr).and_then(|args| {
        let item = syn::parse::<syn::ItemFn>(item)?;
        expand::expand(&args, item)
    });
    match result {
        Ok(tokens) => tokens.into(),
        // Keep the function as written, so that the only errors are ours.
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(original);
            out.into()
        }
    }
}
