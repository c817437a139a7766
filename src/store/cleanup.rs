//! [`cleanup_task`]: removes expired records, on a schedule, from a store without
//! native expiry.

use std::future::Future;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::store::SessionStore;

/// The shortest cleanup interval accepted (Kibana's minimum).
pub const MIN_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// The usual cleanup interval (Kibana's default).
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// A future that calls [`SessionStore::delete_expired`] on `store` every
/// `interval`, with the time `clock` shows, forever: spawn it on the runtime
/// (`tokio::spawn`). The first sweep runs one interval after the start. A sweep
/// that fails is traced and the next one runs on schedule.
///
/// Stores with native expiry (Redis) need no cleanup task.
///
/// ```
/// # #[cfg(feature = "memory-store")] {
/// use tower_sealed_sessions::MemoryStore;
/// use tower_sealed_sessions::clock::Clock;
/// use tower_sealed_sessions::store::{DEFAULT_CLEANUP_INTERVAL, cleanup_task};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let sweeper = cleanup_task(store.clone(), DEFAULT_CLEANUP_INTERVAL, Clock::system()).unwrap();
/// let handle = tokio::spawn(sweeper);
/// # handle.abort();
/// # });
/// # }
/// ```
///
/// # Errors
///
/// An interval under [`MIN_CLEANUP_INTERVAL`] is refused, naming the
/// `cleanup_interval` setting.
pub fn cleanup_task<St: SessionStore>(
    store: St,
    interval: Duration,
    clock: Clock,
) -> Result<impl Future<Output = ()> + Send + 'static, ConfigError> {
    check_interval(interval)?;
    Ok(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.delete_expired(clock.now()).await {
                Ok(removed) => tracing::debug!(removed, "session store cleanup"),
                Err(error) => tracing::warn!(%error, "session store cleanup failed"),
            }
        }
    })
}

/// Refuses a cleanup interval under [`MIN_CLEANUP_INTERVAL`].
pub(crate) fn check_interval(interval: Duration) -> Result<(), ConfigError> {
    if interval < MIN_CLEANUP_INTERVAL {
        return Err(ConfigError::new(
            "cleanup_interval",
            format!(
                "{} is shorter than the minimum of {}",
                crate::duration::written(interval),
                crate::duration::written(MIN_CLEANUP_INTERVAL)
            ),
        ));
    }
    Ok(())
}
