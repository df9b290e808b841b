//! `l2_get`: `DistributedCache::get` against raw redis-rs `GET` + serde_json, 50
//! concurrent tasks; `l2_get_coalesced`: the same with `coalesce_gets` on.

use std::hint::black_box;
use std::sync::Arc;

use ormcache::DistributedCache;
use redis::aio::ConnectionManager;

use super::{Env, Error, REDIS_ROUND, ROUNDS, ROW_ID, Result, Row, TASKS, row};
use crate::stats::{Measured, Worker, alternate, concurrent_round};

const GET_KEY: &str = "row:get";

struct CacheGet {
    cache: DistributedCache,
}

impl Worker for CacheGet {
    async fn op(&mut self) -> bool {
        matches!(self.cache.get::<Row>(GET_KEY).await, Ok(Some(row)) if black_box(&row).id == ROW_ID)
    }
}

struct RawGet {
    conn: ConnectionManager,
    key: Arc<str>,
}

impl Worker for RawGet {
    async fn op(&mut self) -> bool {
        let reply = redis::cmd("GET")
            .arg(&*self.key)
            .query_async::<Option<Vec<u8>>>(&mut self.conn)
            .await;
        let Ok(Some(bytes)) = reply else { return false };
        matches!(serde_json::from_slice::<Row>(&bytes), Ok(row) if black_box(&row).id == ROW_ID)
    }
}

pub(super) fn l2_get(env: &Env) -> Result<Measured> {
    against_raw_get(env, false)
}

pub(super) fn l2_get_coalesced(env: &Env) -> Result<Measured> {
    against_raw_get(env, true)
}

fn against_raw_get(env: &Env, coalesce: bool) -> Result<Measured> {
    let (cache, conn, key) = env.rt.block_on(async {
        let cache = env.distributed_with(|b| b.coalesce_gets(coalesce)).await?;
        let conn = env.raw_connection().await?;
        cache.set(GET_KEY, row(), None).await?;
        let key = Arc::<str>::from(cache.redis_key(GET_KEY));
        Ok::<_, Error>((cache, conn, key))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            let workers = (0..TASKS)
                .map(|_| CacheGet {
                    cache: cache.clone(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
        || {
            let workers = (0..TASKS)
                .map(|_| RawGet {
                    conn: conn.clone(),
                    key: Arc::clone(&key),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
    );
    env.rt.block_on(cache.close())?;
    Ok(Measured {
        ours,
        baseline,
        ..Measured::default()
    })
}
