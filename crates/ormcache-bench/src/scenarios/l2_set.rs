//! `l2_set`: `DistributedCache::set_ref` against raw redis-rs `SET PX` + serde_json,
//! 50 concurrent tasks (both serialize the same row by reference).

use ormcache::DistributedCache;
use redis::aio::ConnectionManager;

use super::{Env, Error, REDIS_ROUND, ROUNDS, Result, Row, TASKS, TTL, row};
use crate::stats::{Measured, Worker, alternate, concurrent_round};

struct CacheSet {
    cache: DistributedCache,
    key: String,
    row: Row,
}

impl Worker for CacheSet {
    async fn op(&mut self) -> bool {
        self.cache.set_ref(&self.key, &self.row, None).await.is_ok()
    }
}

struct RawSet {
    conn: ConnectionManager,
    key: String,
    row: Row,
}

impl Worker for RawSet {
    async fn op(&mut self) -> bool {
        let Ok(bytes) = serde_json::to_vec(&self.row) else {
            return false;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key)
            .arg(bytes)
            .arg("PX")
            .arg(TTL.as_millis() as u64);
        cmd.query_async::<()>(&mut self.conn).await.is_ok()
    }
}

fn set_key(task: usize) -> String {
    format!("row:set:{task}")
}

pub(super) fn l2_set(env: &Env) -> Result<Measured> {
    let (cache, conn) = env.rt.block_on(async {
        Ok::<_, Error>((env.distributed().await?, env.raw_connection().await?))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            let workers = (0..TASKS)
                .map(|t| CacheSet {
                    cache: cache.clone(),
                    key: set_key(t),
                    row: row(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
        || {
            let workers = (0..TASKS)
                .map(|t| RawSet {
                    conn: conn.clone(),
                    key: cache.redis_key(&set_key(t)),
                    row: row(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
    );
    // Both sides wrote the same keys; what is there must read back as the row.
    env.rt.block_on(async {
        let back = cache.get::<Row>(&set_key(0)).await?;
        if back.as_deref() != Some(&row()) {
            return Err::<(), Error>(format!("l2_set: read back {back:?}").into());
        }
        Ok(cache.close().await?)
    })?;
    Ok(Measured {
        ours,
        baseline,
        ..Measured::default()
    })
}
