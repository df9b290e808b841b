//! The SeaORM entities: `users` and `products`. Each `Model` is both the HTTP body and
//! the cached value (plain JSON), so a cache hit returns byte-for-byte what the
//! database read would.

pub(crate) mod product;
pub(crate) mod user;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ormcache::signals::Signals;

/// The signal registry of the service: the entities' hooks send through it, the
/// entity caches' receivers listen on it.
pub(crate) static SIGNALS: LazyLock<Signals> = LazyLock::new(Signals::new);

/// Milliseconds since the Unix epoch, for `created_at`.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `impl ActiveModelBehavior for ActiveModel` sending the lifecycle signals through
/// [`SIGNALS`].
// INTERIM (until `ormcache::sea_orm::signal_hooks!` is merged): sends `post_save`
// with the `Model` and `post_delete` with the `Model` rebuilt from the ActiveModel.
macro_rules! signal_behavior {
    () => {
        #[async_trait::async_trait]
        impl ActiveModelBehavior for ActiveModel {
            async fn after_save<C>(model: Model, _db: &C, insert: bool) -> Result<Model, DbErr>
            where
                C: ConnectionTrait,
            {
                $crate::entities::SIGNALS
                    .send_post_save(&model, insert)
                    .await;
                Ok(model)
            }

            async fn after_delete<C>(self, _db: &C) -> Result<Self, DbErr>
            where
                C: ConnectionTrait,
            {
                if let Ok(model) = sea_orm::TryIntoModel::try_into_model(self.clone()) {
                    $crate::entities::SIGNALS.send_post_delete(&model).await;
                }
                Ok(self)
            }
        }
    };
}
pub(crate) use signal_behavior;
