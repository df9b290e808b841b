//! Methods: any receiver, associated functions, generic impls; companions are
//! methods of the same impl.
#![deny(warnings, missing_docs, unreachable_pub)]

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ormcache::{Cache, QueryCache, cached};

/// A repository.
#[derive(Debug)]
pub struct Repo {
    cache: QueryCache,
    tenant: String,
}

impl Repo {
    /// `&self`.
    #[cached(cache = self.cache, ttl = 60)]
    pub async fn by_ref(&self, id: u64) -> String {
        format!("{}:{id}", self.tenant)
    }

    /// `&mut self`.
    #[cached(cache = self.cache)]
    pub async fn by_mut(&mut self, id: u64) -> u64 {
        self.tenant.push('!');
        id
    }

    /// `self: Arc<Self>`: the cache expression borrows `self`, which the body then
    /// owns.
    #[cached(cache = self.cache, key = format!("{}:{id}", self.tenant))]
    pub async fn by_arc(self: Arc<Self>, id: u64) -> usize {
        self.tenant.len() + id as usize
    }

    /// An associated function without `self`.
    #[cached(cache = cache, skip(cache))]
    pub async fn associated(cache: &QueryCache, id: u64) -> Option<u64> {
        Some(id)
    }
}

/// A generic repository.
#[derive(Debug)]
pub struct Typed<C, T> {
    cache: C,
    marker: PhantomData<T>,
}

impl<C: Cache, T> Typed<C, T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A method of a generic impl returning the impl's parameter.
    #[cached(cache = self.cache)]
    pub async fn get(&self, value: T) -> Result<T, String> {
        Ok(value)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
        let mut repo = Repo {
            cache: cache.clone(),
            tenant: "t".into(),
        };
        assert_eq!(repo.by_ref(1).await, "t:1");
        assert!(
            repo.by_ref_cache_key(&1)
                .unwrap()
                .contains("::Repo::by_ref:")
        );
        assert!(repo.by_ref_invalidate(1).await.unwrap());
        assert_eq!(repo.by_mut(2).await, 2);
        let _ = repo.by_mut_cache_key(&2);
        let repo = Arc::new(repo);
        assert_eq!(Arc::clone(&repo).by_arc(3).await, 5);
        assert_eq!(repo.by_arc_cache_key(&3).as_deref(), Some("t!:3"));
        assert_eq!(Repo::associated(&cache, 4).await, Some(4));
        assert!(
            Repo::associated_cache_key(&4)
                .unwrap()
                .contains("::associated:")
        );
        let typed = Typed {
            cache,
            marker: PhantomData::<String>,
        };
        assert_eq!(typed.get("x".into()).await, Ok("x".to_string()));
        let _ = typed.get_cache_key(&"x".to_string());
        let _ = typed.get_invalidate("x".to_string()).await;
    });
}
