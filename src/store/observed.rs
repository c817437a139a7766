//! [`Observed`]: the store as the layer uses it, every operation in a span of
//! its own and, with the `metrics` feature, timed and counted.
//!
//! The span is `session_store` at `INFO` under the target
//! `tower_sealed_sessions::store`, with the fields `operation` (the method),
//! `store` (the store's [`KIND`](SessionStore::KIND)) and `outcome` (`ok`,
//! `conflict`, `missing` or `error`), and on a store with a record cache
//! `cache` (`hit` or `miss`) for a load. It names no session, key or user. A
//! tracing-opentelemetry subscriber turns each into a span of the request's
//! trace, so the store's share of a request's time shows.

use std::future::Future;

use tracing::Instrument;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{CompareAndSet, IndexEntry, IndexSample, SessionStore, StoreHealth, UserTag};

/// The tracing target of the `session_store` spans, one per store operation
/// (fields `operation`, `store`, `outcome`; never a session, key or user).
///
/// ```
/// use tower_sealed_sessions::store::STORE_TARGET;
///
/// // For example with tracing-subscriber: `EnvFilter::new(format!("{STORE_TARGET}=info"))`,
/// // and tracing-opentelemetry to export them as child spans of the request's.
/// assert_eq!(STORE_TARGET, "tower_sealed_sessions::store");
/// ```
pub const STORE_TARGET: &str = "tower_sealed_sessions::store";

/// A store whose every operation is observed.
pub(crate) struct Observed<St>(pub(crate) St);

/// How an operation ended, as the span and the metrics name it.
trait Outcome {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Outcome for () {}
impl Outcome for u64 {}
impl<T> Outcome for Vec<T> {}
impl Outcome for IndexSample {}

impl Outcome for Option<Record> {
    fn outcome(&self) -> &'static str {
        if self.is_some() { "ok" } else { "missing" }
    }
}

/// `create`: `false` when the key was taken; `touch`: when the record changed.
impl Outcome for bool {
    fn outcome(&self) -> &'static str {
        if *self { "ok" } else { "conflict" }
    }
}

/// `ping`: a store that answers but may lose what it keeps.
impl Outcome for StoreHealth {
    fn outcome(&self) -> &'static str {
        match self {
            StoreHealth::Healthy => "ok",
            StoreHealth::Degraded(_) => "degraded",
        }
    }
}

impl Outcome for CompareAndSet {
    fn outcome(&self) -> &'static str {
        match self {
            CompareAndSet::Done => "ok",
            CompareAndSet::Conflict(_) => "conflict",
            CompareAndSet::Missing => "missing",
        }
    }
}

/// `work` (the store's `operation`) inside its span, its outcome recorded.
fn observe<T: Outcome>(
    store: &'static str,
    operation: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> impl Future<Output = Result<T, StoreError>> {
    // Checked first: with tracing's `log` feature on (some dependency may turn it
    // on), even a span no subscriber wants costs a few hundred instructions.
    let span = if tracing::enabled!(target: STORE_TARGET, tracing::Level::INFO) {
        tracing::info_span!(
            target: STORE_TARGET,
            "session_store",
            operation,
            store,
            outcome = tracing::field::Empty,
            cache = tracing::field::Empty
        )
    } else {
        tracing::Span::none()
    };
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    async move {
        // Without a subscriber that wants the span, the work runs bare.
        let result = if span.is_disabled() {
            work.await
        } else {
            work.instrument(span.clone()).await
        };
        let outcome = match &result {
            Ok(value) => value.outcome(),
            Err(_) => "error",
        };
        if !span.is_disabled() {
            span.record("outcome", outcome);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::store_operation(store, operation, outcome, started.elapsed());
        result
    }
}

/// A load the store answered at once ([`SessionStore::load_now`]): its span, if
/// one is wanted, says `cache = "hit"`.
fn observe_hit(store: &'static str, #[cfg(feature = "metrics")] started: std::time::Instant) {
    if tracing::enabled!(target: STORE_TARGET, tracing::Level::INFO) {
        let _span = tracing::info_span!(
            target: STORE_TARGET,
            "session_store",
            operation = "load",
            store,
            outcome = "ok",
            cache = "hit"
        );
    }
    #[cfg(feature = "metrics")]
    crate::metrics::store_operation(store, "load", "ok", started.elapsed());
}

impl<St: SessionStore> SessionStore for Observed<St> {
    const IMMEDIATE: bool = St::IMMEDIATE;
    const KIND: &'static str = St::KIND;

    fn load_now(&self, key: &StoreKey) -> Option<Record> {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let hit = self.0.load_now(key)?;
        observe_hit(
            St::KIND,
            #[cfg(feature = "metrics")]
            started,
        );
        Some(hit)
    }

    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        observe(St::KIND, "load", self.0.load(key))
    }

    fn load_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send {
        observe(St::KIND, "load_many", self.0.load_many(keys))
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        observe(St::KIND, "create", self.0.create(key, record))
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        observe(
            St::KIND,
            "update",
            self.0.update(key, record, expected_version),
        )
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        observe(
            St::KIND,
            "touch",
            self.0.touch(key, deadlines, expected_version),
        )
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        observe(St::KIND, "delete", self.0.delete(key))
    }

    fn delete_many(
        &self,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        observe(St::KIND, "delete_many", self.0.delete_many(keys))
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        observe(
            St::KIND,
            "delete_version",
            self.0.delete_version(key, expected_version),
        )
    }

    fn delete_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        observe(St::KIND, "delete_expired", self.0.delete_expired(now))
    }

    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        observe(St::KIND, "index_add", self.0.index_add(user, entry))
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        observe(St::KIND, "index_remove", self.0.index_remove(user, keys))
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        observe(St::KIND, "index_list", self.0.index_list(user, now))
    }

    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let sample = self.0.index_sample(user, now, limit);
        observe(St::KIND, "index_sample", sample)
    }

    fn ping(&self) -> impl Future<Output = Result<StoreHealth, StoreError>> + Send {
        observe(St::KIND, "ping", self.0.ping())
    }
}
