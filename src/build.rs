//! [`SessionConfig::build`]: everything a configuration file describes, built
//! in one call: the store its `store:` section names, the keys, the layer, and
//! the cleanup task when the store needs one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{SessionConfig, StoreConfig};
use crate::error::{ConfigError, StoreError};
use crate::layer::SessionLayer;

/// What [`SessionConfig::build`] made: the layer, and the task that removes
/// expired sessions when the store needs one (spawn it, or drop it to do
/// without).
#[non_exhaustive]
pub struct Built {
    /// The layer, on the store the file names.
    pub layer: SessionLayer,
    /// The store's cleanup task (memory, PostgreSQL, SQLite; `None` for Redis,
    /// which expires sessions itself), every `cleanup_interval`.
    pub cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
}

impl Built {
    /// Spawns the cleanup task, if any, on the current tokio runtime, and
    /// returns the layer.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when there is a task to spawn.
    pub fn spawn_cleanup(self) -> SessionLayer {
        if let Some(cleanup) = self.cleanup {
            tokio::spawn(cleanup);
        }
        self.layer
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("layer", &self.layer)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// A store that could not be reached or opened, as the `store` setting's error.
#[allow(dead_code)] // Unused in builds with no store that connects.
fn unreachable_store(kind: &str, err: StoreError) -> ConfigError {
    ConfigError::new("store", format!("the {kind} store cannot be used: {err}"))
        .with_source(Arc::new(err))
}

/// The error for a store this build has no code for.
#[allow(dead_code)] // Unused in builds with every store.
fn not_built(kind: &str, feature: &str) -> ConfigError {
    ConfigError::new(
        "store.type",
        format!(
            "`{kind}`: this build of tower-sealed-sessions has no {kind} store; turn on its \
             `{feature}` feature"
        ),
    )
}

/// The layer and cleanup task on `store`.
#[allow(dead_code)]
fn finish<St>(config: &SessionConfig, store: St, cleans: bool) -> Result<Built, ConfigError>
where
    St: crate::store::SessionStore + Clone,
{
    let layer = SessionLayer::from_config(config, store.clone())?;
    let cleanup = if cleans {
        let task =
            crate::store::cleanup_task(store, config.cleanup_interval(), crate::Clock::system())?;
        Some(Box::pin(task) as Pin<Box<dyn Future<Output = ()> + Send>>)
    } else {
        None
    };
    Ok(Built { layer, cleanup })
}

impl SessionConfig {
    /// Builds everything the file describes: the store its `store:` section
    /// names (connecting to it), the keys (reading or creating key files), the
    /// layer, and the store's cleanup task when it needs one. A section this
    /// build cannot honour (a store whose feature is off) is an error, never a
    /// fallback to another store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_sealed_sessions::SessionConfig;
    ///
    /// let config: SessionConfig = serde_yaml_ng::from_str(
    ///     "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
    ///      store: { type: memory, max_sessions: 10000 }\n",
    /// ).unwrap();
    /// let built = config.build().await.unwrap();
    /// assert!(built.cleanup.is_some(), "the memory store has a cleanup task");
    /// let layer = built.spawn_cleanup(); // then `router.layer(layer)`
    /// # let _ = layer; }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field at fault: a setting, a key, the
    /// store's section (`store.type` for a store this build lacks, `store` for
    /// one that cannot be reached).
    pub async fn build(&self) -> Result<Built, ConfigError> {
        match self.store() {
            #[cfg(feature = "memory-store")]
            StoreConfig::Memory { max_sessions, .. } => {
                let store = crate::MemoryStore::builder()
                    .max_sessions(max_sessions.unwrap_or(crate::MemoryStore::DEFAULT_MAX_SESSIONS))
                    .build();
                finish(self, store, true)
            }
            #[cfg(not(feature = "memory-store"))]
            StoreConfig::Memory { .. } => Err(not_built("memory", "memory-store")),
            #[cfg(feature = "redis")]
            StoreConfig::Redis(settings) => {
                let store = crate::RedisStore::from_settings(settings)
                    .await
                    .map_err(|e| unreachable_store("Redis", e))?;
                finish(self, store, false)
            }
            #[cfg(not(feature = "redis"))]
            StoreConfig::Redis(_) => Err(not_built("redis", "redis")),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(settings) => {
                let store = crate::PostgresStore::from_settings(settings)
                    .await
                    .map_err(|e| unreachable_store("PostgreSQL", e))?;
                finish(self, store, true)
            }
            #[cfg(not(feature = "postgres"))]
            StoreConfig::Postgres(_) => Err(not_built("postgres", "postgres")),
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(settings) => {
                let store = crate::SqliteStore::from_settings(settings)
                    .await
                    .map_err(|e| unreachable_store("SQLite", e))?;
                finish(self, store, true)
            }
            #[cfg(not(feature = "sqlite"))]
            StoreConfig::Sqlite(_) => Err(not_built("sqlite", "sqlite")),
        }
    }
}
